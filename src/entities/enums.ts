// Plain TypeScript enums shared by persistence, services and the schema (which registers them).

export enum UserKind {
  HUMAN = 'HUMAN',
  SERVICE = 'SERVICE',
}

export enum UserStatus {
  ACTIVE = 'ACTIVE',
  DISABLED = 'DISABLED',
}

/** Stored state; EXPIRED is never stored, it is derived from expiresAt at read time. */
export enum StoredKeyStatus {
  ACTIVE = 'ACTIVE',
  DISABLED = 'DISABLED',
  REVOKED = 'REVOKED',
}

export enum KeyStatus {
  ACTIVE = 'ACTIVE',
  DISABLED = 'DISABLED',
  EXPIRED = 'EXPIRED',
  REVOKED = 'REVOKED',
}

export enum AuditOutcome {
  SUCCESS = 'SUCCESS',
  DENIED = 'DENIED',
  FAILURE = 'FAILURE',
}

export enum ActorType {
  USER = 'USER',
  SYSTEM = 'SYSTEM',
  ANONYMOUS = 'ANONYMOUS',
}

export enum VerifyCode {
  VALID = 'VALID',
  MALFORMED = 'MALFORMED',
  NOT_FOUND = 'NOT_FOUND',
  REVOKED = 'REVOKED',
  EXPIRED = 'EXPIRED',
  DISABLED = 'DISABLED',
  OWNER_DISABLED = 'OWNER_DISABLED',
  IP_NOT_ALLOWED = 'IP_NOT_ALLOWED',
  INSUFFICIENT_PERMISSIONS = 'INSUFFICIENT_PERMISSIONS',
  USAGE_EXCEEDED = 'USAGE_EXCEEDED',
  RATE_LIMITED = 'RATE_LIMITED',
}

/** What auditCounts groups by */
export enum AuditGroupBy {
  ACTION = 'ACTION',
  ACTOR = 'ACTOR',
  ACTOR_KEY = 'ACTOR_KEY',
  OUTCOME = 'OUTCOME',
  TARGET_TYPE = 'TARGET_TYPE',
  IP = 'IP',
}

export enum AlertSeverity {
  INFO = 'INFO',
  LOW = 'LOW',
  MEDIUM = 'MEDIUM',
  HIGH = 'HIGH',
  CRITICAL = 'CRITICAL',
}

/** Order for minSeverity filters */
export const SEVERITY_RANK: Record<AlertSeverity, number> = { INFO: 0, LOW: 1, MEDIUM: 2, HIGH: 3, CRITICAL: 4 };

export enum AlertStatus {
  OPEN = 'OPEN',
  ACKNOWLEDGED = 'ACKNOWLEDGED',
  RESOLVED = 'RESOLVED',
}

export enum AlertType {
  VERIFY_FAILURE_BURST = 'VERIFY_FAILURE_BURST',
  REVOKED_KEY_USED = 'REVOKED_KEY_USED',
  EXPIRED_KEY_USED = 'EXPIRED_KEY_USED',
  USAGE_SPIKE = 'USAGE_SPIKE',
  NEW_SOURCE_IP = 'NEW_SOURCE_IP',
  RATE_LIMITED = 'RATE_LIMITED',
  QUOTA_LOW = 'QUOTA_LOW',
  KEY_EXPIRING = 'KEY_EXPIRING',
  DENIED_ACTION_BURST = 'DENIED_ACTION_BURST',
  THRESHOLD = 'THRESHOLD',
}

export enum AlertMetric {
  VERIFY_CALLS = 'VERIFY_CALLS',
  VERIFY_FAILURES = 'VERIFY_FAILURES',
  RATE_LIMITED = 'RATE_LIMITED',
  DENIED_ACTIONS = 'DENIED_ACTIONS',
  AUTH_FAILURES = 'AUTH_FAILURES',
}

export function assertNever(value: never): never {
  throw new Error(`unhandled case: ${String(value)}`);
}
