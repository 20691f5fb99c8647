import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { requireAnyPermission } from '../auth/auth-checker';
import type { GraphQLContext } from '../auth/context';
import { normalize } from '../auth/permissions';
import type { UserEntity } from '../entities';
import { cursorFor } from '../services/pagination';
import { toConnection } from '../schema/connection.type';
import { Role } from '../schema/role.type';
import { ApiKeyConnection } from '../schema/api-key.type';
import { KeyStatus } from '../schema/enums';
import { canReadKeysOf } from '../services/key-access';
import { assertCanListServiceAccounts, visibleUser } from './visibility';
import { CreateServiceAccountInput, CreateUserInput, UpdateUserInput, UserFilter } from '../schema/user.input';
import { User, UserConnection } from '../schema/user.type';

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
  createUser(@Arg('input', () => CreateUserInput) input: CreateUserInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.users.createHuman(ctx.actor, input);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  createServiceAccount(@Arg('input', () => CreateServiceAccountInput) input: CreateServiceAccountInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.users.createServiceAccount(ctx.actor, input);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  updateUser(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateUserInput) input: UpdateUserInput,
    @Ctx() ctx: GraphQLContext,
  ) {
    return ctx.services.users.update(ctx.actor, id, input);
  }

  @Authorized('users:write')
  @Mutation(() => User, { description: "Every key the user owns, and its service accounts' keys, stop verifying (OWNER_DISABLED)" })
  disableUser(@Arg('id', () => ID) id: string, @Arg('reason', () => String) reason: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.users.disable(ctx.actor, id, reason);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  enableUser(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.users.enable(ctx.actor, id);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  assignRole(@Arg('userId', () => ID) userId: string, @Arg('roleId', () => ID) roleId: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.users.assignRole(ctx.actor, userId, roleId);
  }

  @Authorized('users:write')
  @Mutation(() => User)
  unassignRole(@Arg('userId', () => ID) userId: string, @Arg('roleId', () => ID) roleId: string, @Ctx() ctx: GraphQLContext) {
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
