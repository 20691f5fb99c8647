import { registerEnumType } from 'type-graphql';
import { ActorType, AuditGroupBy, AuditOutcome, KeyStatus, UserKind, UserStatus, VerifyCode } from '../entities/enums';

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

export { ActorType, AuditGroupBy, AuditOutcome, KeyStatus, UserKind, UserStatus, VerifyCode };
