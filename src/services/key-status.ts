import type { ApiKeyEntity } from '../entities';
import { KeyStatus, StoredKeyStatus, assertNever } from '../entities/enums';

/** Status is derived at read time: a key past expiresAt is EXPIRED without any job. */
export function keyStatus(key: Pick<ApiKeyEntity, 'storedStatus' | 'expiresAt'>, now = new Date()): KeyStatus {
  switch (key.storedStatus) {
    case StoredKeyStatus.REVOKED:
      return KeyStatus.REVOKED;
    case StoredKeyStatus.ACTIVE:
    case StoredKeyStatus.DISABLED:
      if (key.expiresAt && key.expiresAt.getTime() <= now.getTime()) return KeyStatus.EXPIRED;
      return key.storedStatus === StoredKeyStatus.ACTIVE ? KeyStatus.ACTIVE : KeyStatus.DISABLED;
    default:
      return assertNever(key.storedStatus);
  }
}
