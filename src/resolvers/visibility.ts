import { GraphQLIncludeDirective, GraphQLSkipDirective, Kind, getDirectiveValues, type GraphQLResolveInfo, type SelectionNode } from 'graphql';
import { requireAnyPermission } from '../auth/auth-checker';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import type { ApiKeyEntity, UserEntity } from '../entities';
import { canReadKeysOf } from '../services/key-access';
import { isUuid } from '../services/validation';

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
export function assertCanListServiceAccounts(ctx: GraphQLContext, owner: Pick<UserEntity, 'id'>): void {
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

/**
 * Whether the operation selects the field at `path` below the resolving field: aliases and
 * fragments included, selections @skip or @include leave out excluded, as execution would.
 */
export function selectsPath(info: GraphQLResolveInfo, path: readonly string[]): boolean {
  const included = (node: SelectionNode) =>
    getDirectiveValues(GraphQLSkipDirective, node, info.variableValues)?.if !== true &&
    getDirectiveValues(GraphQLIncludeDirective, node, info.variableValues)?.if !== false;
  const within = (selections: readonly SelectionNode[], depth: number): boolean =>
    selections.some((node) => {
      if (!included(node)) return false;
      if (node.kind === Kind.FIELD) {
        return node.name.value === path[depth] && (depth === path.length - 1 || within(node.selectionSet?.selections ?? [], depth + 1));
      }
      const fragment = node.kind === Kind.INLINE_FRAGMENT ? node : info.fragments[node.name.value];
      return fragment ? within(fragment.selectionSet.selections, depth) : false;
    });
  return info.fieldNodes.some((field) => within(field.selectionSet?.selections ?? [], 0));
}

/**
 * A new key's secret is shown once. `apiKey.owner` is non-null, and so is the owner's
 * `serviceAccounts`: refused after the key was made, either would null the whole answer and lose
 * the secret of a key that exists. So a payload asking for what the caller may not read there is
 * refused before anything is made. (`apiKey.usage` and the owner's `apiKeys` are readable by
 * whoever may manage the owner's keys; what lies deeper is not looked at: see the README.)
 */
export async function assertNewKeyPayloadReadable(ctx: GraphQLContext, info: GraphQLResolveInfo, ownerIdOf: () => Promise<string | null>): Promise<void> {
  if (!selectsPath(info, ['apiKey', 'owner'])) return;
  const ownerId = await ownerIdOf();
  if (ownerId === null || !isUuid(ownerId)) return; // the change itself refuses it
  const owner = await visibleUser(ctx, ownerId, 'ApiKey.owner', { nullable: false });
  if (owner && selectsPath(info, ['apiKey', 'owner', 'serviceAccounts'])) assertCanListServiceAccounts(ctx, owner);
}
