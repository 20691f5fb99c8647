import { requireAnyPermission } from '../auth/auth-checker';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import type { ApiKeyEntity, UserEntity } from '../entities';
import { canReadKeysOf } from '../services/key-access';

/**
 * Links to other users (owner, createdBy, revokedBy, actor …) must not be a way around users:read.
 * Without it a caller sees only itself, its service accounts and, for a service account, its owner.
 * A nullable link to anyone else reads as null (a member's own key list still loads); a non-null
 * link is FORBIDDEN.
 */
export async function visibleUser(
  ctx: GraphQLContext,
  userId: string | null,
  operation: string,
  { nullable = true } = {},
): Promise<UserEntity | null> {
  if (userId === null) return null;
  const user = await ctx.loaders.userById.load(userId);
  if (!user || coveredBy(ctx.principal.permissions, 'users:read')) return user;
  const self = ctx.principal.userId;
  if (user.id === self || user.ownerId === self) return user;
  const caller = await ctx.loaders.userById.load(self);
  if (caller?.ownerId === user.id) return user;
  if (nullable) return null;
  requireAnyPermission(ctx, ['users:read'], operation);
  return null;
}

/** Another user's service accounts are users:read information; one's own are not. */
export function assertCanListServiceAccounts(ctx: GraphQLContext, owner: UserEntity): void {
  if (owner.id !== ctx.principal.userId) requireAnyPermission(ctx, ['users:read'], 'User.serviceAccounts');
}

/** Whether the caller may read this key, as apiKey(id) decides. */
export async function canReadKey(ctx: GraphQLContext, key: ApiKeyEntity): Promise<boolean> {
  if (coveredBy(ctx.principal.permissions, 'keys:read')) return true;
  const owner = await ctx.loaders.userById.load(key.ownerId);
  return owner !== null && canReadKeysOf(ctx.actor, owner);
}

/** A key reached through a link (AuditEvent.actorKey, ApiKey.usage) is readable as apiKey(id) is. */
export async function assertCanReadKey(ctx: GraphQLContext, key: ApiKeyEntity, operation: string): Promise<void> {
  if (!(await canReadKey(ctx, key))) requireAnyPermission(ctx, ['keys:read'], operation);
}
