import { randomUUID } from 'node:crypto';
import { In, type EntityManager } from 'typeorm';
import { ApiKeyEntity, ApiKeyRoleEntity, RoleEntity, UserEntity } from '../entities';
import { StoredKeyStatus, UserKind } from '../entities/enums';
import { coveredBy, intersect } from '../auth/permissions';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { assertTargetWithinActor, assertWithinActor } from './escalation';
import { BadInputError, ConflictError, ForbiddenError } from './errors';
import { assertCanManageKeysOf } from './key-access';
import { parseKeySettings, type KeySettingsInput } from './key-settings';
import type { CreatedKey, KeyService } from './key.service';
import { keyGrants, requireRoles, userPermissions } from './role-lookup';
import { keyStatus } from './key-status';
import { inTransaction, lockById, lockKeyOwnerFirst, lockUserAmong } from './transaction';
import { isUuid, reasonText } from './validation';
import { QUOTA_NOW } from './key-verification.service';

const MAX_GRACE_SECONDS = 30 * 86_400;
const CONFLICT_MESSAGE = 'The key changed concurrently; try again';

function isExpired(key: ApiKeyEntity, now: Date): boolean {
  return key.expiresAt !== null && key.expiresAt.getTime() <= now.getTime();
}

function iso(date: Date | null): string | null {
  return date?.toISOString() ?? null;
}

/** Every transition of an existing key; each commits with its audit event. */
export class KeyLifecycleService {
  constructor(
    private readonly audit: AuditService,
    private readonly keys: KeyService,
  ) {}

  async update(actor: Actor, id: string, input: KeySettingsInput): Promise<ApiKeyEntity> {
    const settings = parseKeySettings(input);
    return inTransaction(this.audit, CONFLICT_MESSAGE, async (tx) => {
      const key = await this.lockManageable(tx, actor, id, 'updated');
      const before: Record<string, unknown> = {};
      const after: Record<string, unknown> = {};
      const set = (field: string, from: unknown, to: unknown) => {
        if (JSON.stringify(from) === JSON.stringify(to)) return;
        before[field] = from;
        after[field] = to;
      };

      if (settings.name !== undefined) {
        set('name', key.name, settings.name);
        key.name = settings.name;
      }
      if (settings.grantedPermissions !== undefined) {
        assertWithinActor(actor, settings.grantedPermissions, 'grant these permissions to the key');
        set('permissions', key.grantedPermissions, settings.grantedPermissions);
        key.grantedPermissions = settings.grantedPermissions;
      }
      if (settings.roleIds !== undefined) {
        const roles = await requireRoles(tx, 'roleIds', settings.roleIds);
        assertWithinActor(actor, roles.flatMap((r) => r.permissions), 'grant these roles to the key');
        const current = await tx.find(ApiKeyRoleEntity, { where: { keyId: key.id } });
        const currentNames = await this.roleNames(tx, current.map((r) => r.roleId));
        set('roles', currentNames, roles.map((r) => r.name).sort());
        await tx.delete(ApiKeyRoleEntity, { keyId: key.id });
        if (roles.length > 0) await tx.insert(ApiKeyRoleEntity, roles.map((r) => ({ keyId: key.id, roleId: r.id })));
      }
      let expiryPushedBack = false;
      if (settings.expiresAt !== undefined) {
        const ends = key.expiresAt;
        expiryPushedBack = settings.expiresAt === null || (ends !== null && settings.expiresAt.getTime() > ends.getTime());
        set('expiresAt', iso(key.expiresAt), iso(settings.expiresAt));
        key.expiresAt = settings.expiresAt;
      }
      if (settings.allowedCidrs !== undefined) {
        set('allowedCidrs', key.allowedCidrs, settings.allowedCidrs);
        key.allowedCidrs = settings.allowedCidrs;
      }
      if (settings.rateLimit !== undefined) {
        const current = key.rateLimitLimit === null ? null : { limit: key.rateLimitLimit, windowSeconds: key.rateLimitWindowSeconds };
        set('rateLimit', current, settings.rateLimit);
        key.rateLimitLimit = settings.rateLimit?.limit ?? null;
        key.rateLimitWindowSeconds = settings.rateLimit?.windowSeconds ?? null;
        // A changed setting starts a fresh window, even one the key had before; nothing else does.
        if ('rateLimit' in after) key.rateLimitWindowId = randomUUID();
      }
      if (settings.remaining !== undefined) {
        set('remaining', key.remaining, settings.remaining);
        key.remaining = settings.remaining;
      }
      if (settings.refill !== undefined) {
        const current = key.refillAmount === null ? null : { amount: key.refillAmount, intervalSeconds: key.refillIntervalSeconds };
        set('refill', current, settings.refill);
        key.refillAmount = settings.refill?.amount ?? null;
        key.refillIntervalSeconds = settings.refill?.intervalSeconds ?? null;
        key.lastRefillAt = settings.refill ? new Date() : null;
      }
      if (settings.metadata !== undefined) {
        set('metadata', key.metadata, settings.metadata);
        key.metadata = settings.metadata;
      }
      // Changing a key that can do more than the actor would widen or reshape someone else's
      // credential; narrowing it into the actor's own reach (or disabling, revoking it) is fine.
      // Checked for a change that changes nothing too: its answer would show the key all the same.
      await this.assertKeyWithinActor(tx, actor, key, 'change this key');
      // A rotated key counts against its successor's quota and rate limit, and ends with its grace:
      // sooner, never later (that would revive it). Checked after the escalation check: one who
      // may not change the key learns nothing of it.
      // Refused whenever given, changed or not: the old row's own values are not the line's (its
      // quota is null), so `remaining: null` would "succeed" while the line stays limited.
      const lineRefusal = settings.remaining !== undefined || settings.refill !== undefined
        ? 'A rotated key draws on its successor\'s quota: change remaining and refill on the successor'
        : settings.rateLimit !== undefined
          ? 'A rotated key counts against its successor\'s rate limit: change rateLimit on the successor'
          : expiryPushedBack
            ? 'A rotated key expires when its grace period ends; it can end sooner, not later'
            : null;
      if (lineRefusal && (await tx.existsBy(ApiKeyEntity, { rotatedFromId: key.id }))) throw new ConflictError(lineRefusal);
      // After the rotation check: a rotated key holds no quota of its own, its successor does.
      if (key.refillAmount !== null && key.remaining === null) {
        throw new BadInputError('refill', 'refill needs remaining to be set');
      }
      if (Object.keys(after).length === 0) return key;
      key.updatedAt = new Date();
      await writeKey(tx, key);
      await this.record(tx, actor, 'key.update', key, { before, after });
      return key;
    });
  }

  async disable(actor: Actor, id: string): Promise<ApiKeyEntity> {
    return this.setStatus(actor, id, StoredKeyStatus.DISABLED, 'key.disable');
  }

  async enable(actor: Actor, id: string): Promise<ApiKeyEntity> {
    return this.setStatus(actor, id, StoredKeyStatus.ACTIVE, 'key.enable');
  }

  async revoke(actor: Actor, id: string, reason: string): Promise<ApiKeyEntity> {
    const why = reasonText(reason);
    return inTransaction(this.audit, CONFLICT_MESSAGE, async (tx) => {
      const key = await this.lockManageable(tx, actor, id, 'revoked again');
      const before = keyStatus(key);
      this.markRevoked(key, actor, why);
      await writeKey(tx, key);
      await this.record(tx, actor, 'key.revoke', key, { reason: why, before: { status: before }, after: { status: 'REVOKED' } });
      return key;
    });
  }

  /** Emergency: every key of the user and of its service accounts, in one transaction. */
  async revokeAll(actor: Actor, userId: string, reason: string): Promise<number> {
    const why = reasonText(reason);
    return inTransaction(this.audit, CONFLICT_MESSAGE, async (tx) => {
      // The keys will name the actor (revokedBy): its row too, in id order with the target's.
      const user = await lockUserAmong(tx, userId, [actor.userId]);
      assertCanManageKeysOf(actor, user);
      const keys = await tx
        .createQueryBuilder(ApiKeyEntity, 'k')
        .setLock('pessimistic_write')
        .where('k.stored_status <> :revoked', { revoked: StoredKeyStatus.REVOKED })
        .andWhere('(k.owner_id = :userId OR k.owner_id IN (SELECT id FROM users WHERE owner_id = :userId))', { userId: user.id })
        .orderBy('k.created_at')
        .addOrderBy('k.id') // one lock order for keys made in the same instant
        .getMany();
      for (const key of keys) this.markRevoked(key, actor, why);
      for (const key of keys) await writeKey(tx, key);
      await this.audit.record(tx, actor, {
        action: 'key.revoke_all',
        targetType: 'user',
        targetId: user.id,
        details: { reason: why, count: keys.length, keyIds: keys.map((k) => k.id) },
      });
      return keys.length;
    });
  }

  /** A successor with the same settings; the old key keeps verifying until now + grace, then is EXPIRED. */
  async rotate(actor: Actor, id: string, gracePeriodSeconds: number | null | undefined): Promise<CreatedKey> {
    const grace = gracePeriodSeconds ?? 0;
    if (!Number.isInteger(grace) || grace < 0 || grace > MAX_GRACE_SECONDS) {
      throw new BadInputError('gracePeriodSeconds', `gracePeriodSeconds must be a whole number from 0 to ${MAX_GRACE_SECONDS}`);
    }
    return inTransaction(this.audit, 'This key was already rotated', async (tx) => {
      const key = await this.lockManageable(tx, actor, id, 'rotated');
      const now = new Date();
      if (isExpired(key, now)) throw new ConflictError('An expired key cannot be rotated; create a new one');
      // A successor would be ACTIVE: rotating must not be a way around a disable.
      if (key.storedStatus === StoredKeyStatus.DISABLED) throw new ConflictError('A disabled key cannot be rotated; enable it first');
      const successorOf = await tx.findOneBy(ApiKeyEntity, { rotatedFromId: key.id });
      if (successorOf) throw new ConflictError('This key was already rotated');
      // What the key can do now (its owner's permissions bound its grants, `*` included) must be within the actor's reach.
      await this.assertKeyWithinActor(tx, actor, key, 'rotate this key');
      const roleIds = (await tx.find(ApiKeyRoleEntity, { where: { keyId: key.id } })).map((r) => r.roleId);
      // The successor takes over the quota as it stands, a refill that is due included, on the same schedule.
      const quota = key.remaining === null ? null : await quotaNow(tx, key.id);
      const successor = await this.keys.insertKey(
        tx,
        actor,
        {
          ownerId: key.ownerId,
          name: key.name,
          prefix: key.prefix,
          roleIds,
          permissions: key.grantedPermissions,
          expiresAt: key.expiresAt,
          allowedCidrs: key.allowedCidrs,
          rateLimit: key.rateLimitLimit === null ? null : { limit: key.rateLimitLimit, windowSeconds: key.rateLimitWindowSeconds! },
          remaining: quota?.available ?? null,
          refill: key.refillAmount === null ? null : { amount: key.refillAmount, intervalSeconds: key.refillIntervalSeconds! },
          metadata: key.metadata,
        },
        { rotatedFromId: key.id, lastRefillAt: quota?.nextRefillAt ?? null, rateLimitWindowId: key.rateLimitWindowId },
      );
      const graceEnd = new Date(now.getTime() + grace * 1000);
      const oldExpiry = key.expiresAt;
      if (oldExpiry === null || graceEnd.getTime() < oldExpiry.getTime()) key.expiresAt = graceEnd;
      // The quota now lives in the successor only: a verification that was waiting for this row
      // finds none here and follows it (KeyVerificationService), so nothing is spent twice.
      Object.assign(key, { remaining: null, refillAmount: null, refillIntervalSeconds: null, lastRefillAt: null, updatedAt: now });
      await writeKey(tx, key);
      // Older keys of the line still in their grace end with this one: a rotation with no grace cuts off every older secret.
      // TypeORM answers an UPDATE with [rows, count]
      const [cut] = (await tx.query(CUT_PREDECESSORS, [key.id, key.expiresAt])) as [Array<{ id: string }>, number];
      await this.record(tx, actor, 'key.rotate', key, {
        gracePeriodSeconds: grace,
        successorId: successor.key.id,
        before: { expiresAt: iso(oldExpiry) },
        after: { expiresAt: iso(key.expiresAt) },
        ...(cut.length > 0 ? { predecessorsExpired: cut.map((row) => row.id) } : {}),
      });
      return successor;
    });
  }

  private async setStatus(actor: Actor, id: string, status: StoredKeyStatus, action: string): Promise<ApiKeyEntity> {
    return inTransaction(this.audit, CONFLICT_MESSAGE, async (tx) => {
      const key = await this.lockManageable(tx, actor, id, status === StoredKeyStatus.ACTIVE ? 'enabled' : 'disabled');
      // Enabling gives back everything the key can do: only to one who could issue it (an active
      // key too: the answer would show it).
      if (status === StoredKeyStatus.ACTIVE) {
        await this.assertKeyWithinActor(tx, actor, key, 'enable this key');
        if (!(await outranksDisabler(tx, actor, key))) {
          throw new ForbiddenError('This key was disabled by someone else: enabling it needs keys:write', { required: ['keys:write'] });
        }
      }
      // Statuses as the API shows them: an expired key stays EXPIRED whatever is stored.
      const before = keyStatus(key);
      if (key.storedStatus === status) {
        // Disabled already (by its owner, say): the disable of one who outranks that becomes the one that holds.
        if (status === StoredKeyStatus.DISABLED && key.disabledById !== actor.userId && (await outranksDisabler(tx, actor, key))) {
          const disabledBy = key.disabledById;
          key.disabledById = actor.userId;
          key.updatedAt = new Date();
          await writeKey(tx, key);
          await this.record(tx, actor, action, key, {
            before: { status: before, disabledById: disabledBy },
            after: { status: keyStatus(key), disabledById: actor.userId },
          });
        }
        return key;
      }
      key.storedStatus = status;
      key.disabledById = status === StoredKeyStatus.DISABLED ? actor.userId : null;
      key.updatedAt = new Date();
      await writeKey(tx, key);
      await this.record(tx, actor, action, key, { before: { status: before }, after: { status: keyStatus(key) } });
      return key;
    });
  }

  /**
   * No escalation through someone else's key: what the key can do (its grants and roles' permissions
   * within what its owner holds now, as verification computes it) must be within the actor's reach.
   */
  private async assertKeyWithinActor(tx: EntityManager, actor: Actor, key: ApiKeyEntity, attempt: string): Promise<void> {
    assertTargetWithinActor(actor, intersect(await keyGrants(tx, key), await userPermissions(tx, key.ownerId)), attempt);
  }

  /** Locks the key, checks the actor may manage its owner's keys, and refuses revoked keys. */
  private async lockManageable(tx: EntityManager, actor: Actor, id: string, attempted: string): Promise<ApiKeyEntity> {
    // Users before the key (a key's owner never changes, so reading it unlocked is safe).
    const unlocked = isUuid(id) ? await tx.findOneBy(ApiKeyEntity, { id }) : null;
    if (unlocked) await lockKeyOwnerFirst(tx, unlocked.ownerId, actor.userId);
    const key = await lockById(tx, ApiKeyEntity, 'ApiKey', id);
    const owner = await tx.findOneByOrFail(UserEntity, { id: key.ownerId });
    assertCanManageKeysOf(actor, owner);
    if (key.storedStatus === StoredKeyStatus.REVOKED) throw new ConflictError(`A revoked key cannot be ${attempted}`);
    return key;
  }

  private markRevoked(key: ApiKeyEntity, actor: Actor, reason: string): void {
    const now = new Date();
    key.storedStatus = StoredKeyStatus.REVOKED;
    key.revokedAt = now;
    key.revokedById = actor.userId;
    key.revokeReason = reason;
    key.updatedAt = now;
  }

  private async roleNames(tx: EntityManager, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const roles = await tx.find(RoleEntity, { where: { id: In(ids) } });
    return roles.map((r) => r.name).sort();
  }

  private record(tx: EntityManager, actor: Actor, action: string, key: ApiKeyEntity, details: Record<string, unknown>) {
    return this.audit.record(tx, actor, { action, targetType: 'api_key', targetId: key.id, details: { ...details, start: key.start } });
  }
}

/**
 * A disable is often incident response: the owner (keys:own) must not undo one made by someone
 * else, such as an administrator or a service account's human owner. Who may: the one who made
 * it, a holder of keys:write, and a service account's owner where the account disabled its own key.
 */
async function outranksDisabler(tx: EntityManager, actor: Actor, key: ApiKeyEntity): Promise<boolean> {
  if (key.disabledById === null || key.disabledById === actor.userId || coveredBy(actor.permissions, 'keys:write')) return true;
  const disabler = await tx.findOneBy(UserEntity, { id: key.disabledById });
  return disabler?.kind === UserKind.SERVICE && disabler.id === key.ownerId && disabler.ownerId === actor.userId;
}

/** Keys earlier in the line of `$1` that would outlive `$2` (their grace) expire at `$2` instead. */
const CUT_PREDECESSORS = `
  WITH RECURSIVE line(id) AS (
    SELECT rotated_from_id FROM api_keys WHERE id = $1 AND rotated_from_id IS NOT NULL
    UNION ALL SELECT a.rotated_from_id FROM api_keys a JOIN line l ON a.id = l.id WHERE a.rotated_from_id IS NOT NULL)
  UPDATE api_keys k SET expires_at = $2, updated_at = now()
   WHERE k.id IN (SELECT id FROM line) AND (k.expires_at IS NULL OR k.expires_at > $2)
  RETURNING k.id`;

async function quotaNow(tx: EntityManager, keyId: string): Promise<{ available: number; nextRefillAt: Date | null }> {
  const [row] = (await tx.query(`WITH ${QUOTA_NOW('$1')} SELECT available, next_refill_at FROM due`, [keyId])) as Array<{ available: number; next_refill_at: Date | null }>;
  return { available: row!.available, nextRefillAt: row!.next_refill_at };
}

/**
 * Writes a key's changeable columns as they are now. An UPDATE, not TypeORM's save(): save compares
 * the entity with what it loaded, and its comparison throws on client JSON with a key named
 * hasOwnProperty in metadata, which would make such a key impossible to revoke.
 */
function writeKey(tx: EntityManager, key: ApiKeyEntity): Promise<unknown> {
  return tx.update(ApiKeyEntity, { id: key.id }, {
    name: key.name,
    storedStatus: key.storedStatus,
    disabledById: key.disabledById,
    grantedPermissions: key.grantedPermissions,
    expiresAt: key.expiresAt,
    revokedAt: key.revokedAt,
    revokedById: key.revokedById,
    revokeReason: key.revokeReason,
    allowedCidrs: key.allowedCidrs,
    rateLimitLimit: key.rateLimitLimit,
    rateLimitWindowSeconds: key.rateLimitWindowSeconds,
    rateLimitWindowId: key.rateLimitWindowId,
    remaining: key.remaining,
    refillAmount: key.refillAmount,
    refillIntervalSeconds: key.refillIntervalSeconds,
    lastRefillAt: key.lastRefillAt,
    metadata: key.metadata,
    updatedAt: key.updatedAt,
  } as never);
}
