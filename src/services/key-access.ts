import { coveredBy } from '../auth/permissions';
import { UserKind } from '../entities/enums';
import type { Actor } from './actor';
import { ForbiddenError } from './errors';

interface KeyOwner {
  id: string;
  kind: UserKind;
  ownerId: string | null;
}

/** keys:write manages anyone's keys; keys:own only one's own and one's service accounts' keys. */
export function canManageKeysOf(actor: Actor, owner: KeyOwner): boolean {
  if (coveredBy(actor.permissions, 'keys:write')) return true;
  const ownsIt = owner.id === actor.userId || (owner.kind === UserKind.SERVICE && owner.ownerId === actor.userId);
  return ownsIt && coveredBy(actor.permissions, 'keys:own');
}

export function assertCanManageKeysOf(actor: Actor, owner: KeyOwner): void {
  if (!canManageKeysOf(actor, owner)) {
    throw new ForbiddenError("keys:own covers only your own keys and your service accounts' keys", { required: ['keys:write'] });
  }
}

/** Reading: keys:read sees every key; keys:own sees its own and its service accounts'. */
export function canReadKeysOf(actor: Actor, owner: KeyOwner): boolean {
  return coveredBy(actor.permissions, 'keys:read') || canManageKeysOf(actor, owner);
}
