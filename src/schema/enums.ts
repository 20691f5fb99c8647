import { registerEnumType } from 'type-graphql';
import {
  ActorType,
  AlertMetric,
  AlertSeverity,
  AlertStatus,
  AlertType,
  AuditGroupBy,
  AuditOutcome,
  KeyStatus,
  UserKind,
  UserStatus,
  VerifyCode,
} from '../entities/enums';

export enum TimeBucket {
  MINUTE = 'MINUTE',
  HOUR = 'HOUR',
  DAY = 'DAY',
}

export enum SortOrder {
  ASC = 'ASC',
  DESC = 'DESC',
}

registerEnumType(UserKind, {
  name: 'UserKind',
  valuesConfig: {
    HUMAN: { description: 'A person' },
    SERVICE: { description: 'A non-human identity (application, pipeline, device) with a responsible human owner' },
  },
});
registerEnumType(UserStatus, { name: 'UserStatus' });
registerEnumType(KeyStatus, {
  name: 'KeyStatus',
  valuesConfig: {
    DISABLED: { description: 'Temporarily switched off; enableApiKey turns it back on' },
    EXPIRED: { description: 'Past expiresAt (including a rotated key whose grace period ended)' },
    REVOKED: { description: 'Permanently revoked; cannot be re-enabled' },
  },
});
registerEnumType(AuditOutcome, { name: 'AuditOutcome' });
registerEnumType(ActorType, { name: 'ActorType' });
registerEnumType(SortOrder, { name: 'SortOrder' });
registerEnumType(TimeBucket, { name: 'TimeBucket' });
registerEnumType(AuditGroupBy, { name: 'AuditGroupBy' });
registerEnumType(VerifyCode, { name: 'VerifyCode', description: 'Why a verification succeeded or failed, checked in this order.' });

registerEnumType(AlertSeverity, { name: 'AlertSeverity' });
registerEnumType(AlertStatus, { name: 'AlertStatus' });
registerEnumType(AlertMetric, { name: 'AlertMetric' });
registerEnumType(AlertType, {
  name: 'AlertType',
  valuesConfig: {
    VERIFY_FAILURE_BURST: { description: 'Many failed verifications from one source or against one key within a short window' },
    REVOKED_KEY_USED: { description: 'A revoked key was presented: likely leaked' },
    EXPIRED_KEY_USED: { description: 'An expired key was presented' },
    USAGE_SPIKE: { description: "A key's call rate jumped far above its own learned baseline" },
    NEW_SOURCE_IP: { description: 'A key was used from a network it has not been seen on before' },
    RATE_LIMITED: { description: 'A key hit its rate limit' },
    QUOTA_LOW: { description: "A key's remaining quota fell below its warning level" },
    KEY_EXPIRING: { description: 'A key expires soon' },
    DENIED_ACTION_BURST: { description: 'A principal was repeatedly denied on this API (privilege probing)' },
    THRESHOLD: { description: 'An administrator-defined AlertRule was crossed' },
  },
});

export { ActorType, AlertMetric, AlertSeverity, AlertStatus, AlertType, AuditGroupBy, AuditOutcome, KeyStatus, UserKind, UserStatus, VerifyCode };
