import type { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import type { AuditService } from './audit.service';
import { ConflictError, NotFoundError, isUniqueViolation } from './errors';
import { UserEntity } from '../entities';
import { isUuid } from './validation';

/** Runs an audited change in one transaction; a lost race on a unique column becomes CONFLICT rather than a 500. */
export async function inTransaction<T>(
  audit: AuditService,
  conflictMessage: string,
  work: (tx: EntityManager) => Promise<T>,
): Promise<T> {
  try {
    return await audit.transaction(work);
  } catch (error) {
    if (isUniqueViolation(error)) throw new ConflictError(conflictMessage);
    throw error;
  }
}

/**
 * Locks users' rows FOR KEY SHARE (what a foreign key to them would take later), in id order, before
 * any role or key is locked: every writer takes users first, so none waits for a user while holding
 * a role or a key that another writer, holding that user, wants next.
 */
export async function lockUsersFirst(tx: EntityManager, ids: ReadonlyArray<string | null | undefined>): Promise<void> {
  const valid = [...new Set(ids.filter((id): id is string => typeof id === 'string' && isUuid(id)))].sort();
  if (valid.length > 0) await tx.query('SELECT 1 FROM users WHERE id = ANY($1::uuid[]) ORDER BY id FOR KEY SHARE', [valid]);
}

/**
 * Locks a key's owner, the human who owns it when it is a service account, and the actor (FOR KEY
 * SHARE, in id order), before any key. revokeAll holds that human FOR UPDATE, so a service
 * account's key is not created or rotated while every key of its owner is being revoked: the
 * new key would be in no snapshot of the revocation and would survive it.
 */
export async function lockKeyOwnerFirst(tx: EntityManager, ownerId: string | null, actorId: string | null | undefined): Promise<void> {
  const humanOf = async () =>
    ownerId !== null && isUuid(ownerId)
      ? (((await tx.query('SELECT owner_id FROM users WHERE id = $1', [ownerId])) as Array<{ owner_id: string | null }>)[0]?.owner_id ?? null)
      : null;
  const human = await humanOf();
  await lockUsersFirst(tx, [ownerId, human, actorId]);
  // The account changed hands before it was locked (rare): its new owner too, out of order.
  const now = await humanOf();
  if (now !== human) await lockUsersFirst(tx, [now]);
}

/**
 * Locks the user `id` FOR UPDATE (NOT_FOUND when there is none) together with the users the change
 * will point at (`alsoShared`, FOR KEY SHARE, as their foreign keys would), all in id order: two
 * such changes pointing at each other's users (two administrators revoking each other's keys)
 * wait for one another instead of deadlocking.
 */
export async function lockUserAmong(tx: EntityManager, id: string, alsoShared: ReadonlyArray<string | null | undefined>): Promise<UserEntity> {
  let user: UserEntity | null = null;
  // Lowercase, as PostgreSQL orders uuids (a client may send them in capitals).
  const target = id.toLowerCase();
  const others = alsoShared.filter((other): other is string => typeof other === 'string' && isUuid(other)).map((other) => other.toLowerCase());
  const ids = [...new Set([target, ...others])].sort();
  for (const each of ids) {
    if (each === target) user = await lockById(tx, UserEntity, 'User', id);
    else await lockUsersFirst(tx, [each]);
  }
  return user!;
}

/** Reads a row FOR UPDATE so concurrent changes to it serialise; NOT_FOUND when there is none. */
export async function lockById<T extends ObjectLiteral>(
  tx: EntityManager,
  entity: EntityTarget<T>,
  label: string,
  id: string,
): Promise<T> {
  const row = isUuid(id)
    ? await tx.createQueryBuilder(entity, 'row').setLock('pessimistic_write').where('row.id = :id', { id }).getOne()
    : null;
  if (!row) throw new NotFoundError(label, id);
  return row;
}
