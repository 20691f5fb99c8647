import { coversAll, notCoveredBy } from '../auth/permissions';
import type { Actor } from './actor';
import { ForbiddenError } from './errors';

/**
 * No escalation: whatever a principal grants (to a role, to a user through a role, to a key)
 * must be covered by its own effective permissions at that moment, wildcards included.
 * The same rule guards changing a principal that holds more than the actor does.
 */
export function assertWithinActor(actor: Actor, permissions: readonly string[], attempt: string): void {
  const beyond = [...new Set(notCoveredBy(actor.permissions, permissions))];
  if (beyond.length > 0) {
    throw new ForbiddenError(`Cannot ${attempt}: it involves permissions you do not hold (${beyond.join(', ')})`, {
      reason: 'ESCALATION',
      permissions: beyond,
    });
  }
}

/**
 * The same rule for changing a principal (a user, a key) that holds more than the actor. The
 * refusal does not list what the principal holds: that is not the actor's to read.
 */
export function assertTargetWithinActor(actor: Actor, targetPermissions: readonly string[], attempt: string): void {
  if (!coversAll(actor.permissions, targetPermissions)) {
    throw new ForbiddenError(`Cannot ${attempt}: it holds permissions you do not hold`, { reason: 'ESCALATION' });
  }
}

/**
 * The same rule for a role: changing its permissions or deleting it changes what every user holding
 * it can do, and what every key carrying it can do within its owner's permissions.
 */
export function assertHoldersWithinActor(actor: Actor, holdersPermissions: readonly string[], attempt: string): void {
  if (!coversAll(actor.permissions, holdersPermissions)) {
    throw new ForbiddenError(`Cannot ${attempt}: a user holding it, or owning a key that carries it, holds permissions you do not hold`, {
      reason: 'ESCALATION',
    });
  }
}
