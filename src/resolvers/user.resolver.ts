import type { GraphQLResolveInfo } from 'graphql';
import { Arg, Authorized, Ctx, FieldResolver, ID, Info, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { requireAnyPermission } from '../auth/auth-checker';
import type { GraphQLContext } from '../auth/context';
import { normalize } from '../auth/permissions';
import type { UserEntity } from '../entities';
import { UserKind, UserStatus } from '../entities/enums';
import { cursorFor } from '../services/pagination';
import { toConnection } from '../schema/connection.type';
import { Role } from '../schema/role.type';
import { ApiKeyConnection } from '../schema/api-key.type';
import { KeyStatus } from '../schema/enums';
import { canReadKeysOf } from '../services/key-access';
import { assertCanListServiceAccounts, selectsPath, visibleUser } from './visibility';
import { isUuid } from '../services/validation';
import { CreateServiceAccountInput, CreateUserInput, UpdateUserInput, UserFilter } from '../schema/user.input';
import { User, UserConnection } from '../schema/user.type';

type PayloadUser = Pick<UserEntity, 'id' | 'kind' | 'ownerId' | 'status'>;

/**
 * A user mutation answers a non-null User: a payload field refused after the change would null the
 * answer of a change that happened. So what the caller may not read on that user is refused
 * before anything changes (deeper links are not looked at: see the README).
 */
function assertPayloadReadable(ctx: GraphQLContext, info: GraphQLResolveInfo, user: PayloadUser | null): void {
  if (!user) return; // the change itself refuses an unknown user
  if (selectsPath(info, ['apiKeys']) && !canReadKeysOf(ctx.actor, user)) requireAnyPermission(ctx, ['keys:read'], 'User.apiKeys');
  if (selectsPath(info, ['serviceAccounts'])) assertCanListServiceAccounts(ctx, user);
}

/** The user a mutation names, as it is now (null when there is none: the change says so). */
async function existingUser(ctx: GraphQLContext, id: string): Promise<PayloadUser | null> {
  if (!isUuid(id)) return null;
  // Loaders are renewed once the change is made (build-schema): the answer reads the user as it is left.
  return ctx.loaders.userById.load(id);
}

/** A user not yet made: nobody is it yet. */
const NEW_USER = '';

@Resolver(() => User)
export class UserResolver {
  /** Everyone may read their own user; anyone else needs users:read. */
  @Query(() => User, { nullable: true })
  async user(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext): Promise<UserEntity | null> {
    if (id !== ctx.principal.userId) requireAnyPermission(ctx, ['users:read'], 'Query.user');
    return ctx.loaders.userById.load(id);
  }

  @Authorized('users:read')
  @Query(() => UserConnection)
  async users(
    @Ctx() ctx: GraphQLContext,
    @Arg('filter', () => UserFilter, { nullable: true }) filter?: UserFilter | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: 50 }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ) {
    const page = await ctx.services.users.list(filter, first, after);
    page.rows.forEach((row) => ctx.loaders.userById.prime(row.id, row));
    return toConnection(page.rows, page.hasNextPage, cursorFor('u'), page.totalCount);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  createUser(@Arg('input', () => CreateUserInput) input: CreateUserInput, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, { id: NEW_USER, kind: UserKind.HUMAN, ownerId: null, status: UserStatus.ACTIVE });
    return ctx.services.users.createHuman(ctx.actor, input);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  createServiceAccount(@Arg('input', () => CreateServiceAccountInput) input: CreateServiceAccountInput, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, { id: NEW_USER, kind: UserKind.SERVICE, ownerId: input.ownerId, status: UserStatus.ACTIVE });
    return ctx.services.users.createServiceAccount(ctx.actor, input);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  async updateUser(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateUserInput) input: UpdateUserInput,
    @Ctx() ctx: GraphQLContext,
    @Info() info: GraphQLResolveInfo,
  ) {
    // Moved to another owner, a service account's keys are read as the new owner's would be; an
    // owner the change will refuse (unknown, not a human) is left to it to say so.
    const user = await existingUser(ctx, id);
    const newOwner = input.ownerId ? await existingUser(ctx, input.ownerId) : null;
    const acceptable = !input.ownerId || (user?.kind === UserKind.SERVICE && newOwner?.kind === UserKind.HUMAN && newOwner.status === UserStatus.ACTIVE);
    if (acceptable) assertPayloadReadable(ctx, info, user && { ...user, ownerId: input.ownerId ?? user.ownerId });
    return ctx.services.users.update(ctx.actor, id, input);
  }

  @Authorized('users:write')
  @Mutation(() => User, { description: "Every key the user owns, and its service accounts' keys, stop verifying (OWNER_DISABLED)" })
  async disableUser(@Arg('id', () => ID) id: string, @Arg('reason', () => String) reason: string, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, await existingUser(ctx, id));
    return ctx.services.users.disable(ctx.actor, id, reason);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  async enableUser(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, await existingUser(ctx, id));
    return ctx.services.users.enable(ctx.actor, id);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  async assignRole(@Arg('userId', () => ID) userId: string, @Arg('roleId', () => ID) roleId: string, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, await existingUser(ctx, userId));
    return ctx.services.users.assignRole(ctx.actor, userId, roleId);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  async unassignRole(@Arg('userId', () => ID) userId: string, @Arg('roleId', () => ID) roleId: string, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    assertPayloadReadable(ctx, info, await existingUser(ctx, userId));
    return ctx.services.users.unassignRole(ctx.actor, userId, roleId);
  }

  @FieldResolver(() => User, { nullable: true, description: 'The responsible human of a service account; null for humans' })
  owner(@Root() user: UserEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, user.ownerId, 'User.owner');
  }

  @FieldResolver(() => [User])
  serviceAccounts(@Root() user: UserEntity, @Ctx() ctx: GraphQLContext) {
    assertCanListServiceAccounts(ctx, user);
    return ctx.loaders.serviceAccountsByOwnerId.load(user.id);
  }

  @FieldResolver(() => [Role])
  roles(@Root() user: UserEntity, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.rolesByUserId.load(user.id);
  }

  @FieldResolver(() => [String], { description: "Union of the permissions of the user's roles" })
  async permissions(@Root() user: UserEntity, @Ctx() ctx: GraphQLContext): Promise<string[]> {
    const roles = await ctx.loaders.rolesByUserId.load(user.id);
    return normalize(roles.flatMap((r) => r.permissions));
  }

  @FieldResolver(() => ApiKeyConnection)
  async apiKeys(
    @Root() user: UserEntity,
    @Ctx() ctx: GraphQLContext,
    @Arg('status', () => KeyStatus, { nullable: true }) status?: KeyStatus | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: 50 }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ) {
    if (!canReadKeysOf(ctx.actor, user)) requireAnyPermission(ctx, ['keys:read'], 'User.apiKeys');
    const page = await ctx.services.keyQueries.list(ctx.actor, { ownerId: user.id, status }, first, after);
    return toConnection(page.rows, page.hasNextPage, cursorFor('k'), page.totalCount);
  }

  @FieldResolver(() => User, { nullable: true })
  createdBy(@Root() user: UserEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, user.createdById, 'User.createdBy');
  }
}
