import type { GraphQLResolveInfo } from 'graphql';
import { Arg, Authorized, Ctx, FieldResolver, ID, Info, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { intersect, normalize } from '../auth/permissions';
import type { ApiKeyEntity } from '../entities';
import { KeyStatus, StoredKeyStatus } from '../entities/enums';
import { ApiKeyFilter, CreateApiKeyInput, UpdateApiKeyInput } from '../schema/api-key.input';
import { ApiKey, ApiKeyConnection, CreatedApiKey, RateLimit, Refill } from '../schema/api-key.type';
import { toConnection } from '../schema/connection.type';
import { TimeBucket } from '../schema/enums';
import { DateTimeISO } from '../schema/scalars';
import { UsagePoint } from '../schema/usage.type';
import { seriesWindow } from '../services/usage.service';
import { availableQuota, lastRefillAsOf } from '../services/key-verification.service';
import { cursorFor } from '../services/pagination';
import { keyStatus } from '../services/key-status';
import { isUuid } from '../services/validation';
import { assertCanReadKey, assertNewKeyPayloadReadable, visibleUser } from './visibility';
import { Role } from '../schema/role.type';
import { User } from '../schema/user.type';

/** Where a key's quota and rate limit live: the key itself, or once rotated its newest successor. */
async function quotaHolder(key: ApiKeyEntity, ctx: GraphQLContext): Promise<ApiKeyEntity> {
  let holder = key;
  for (let next = await ctx.loaders.successorByKeyId.load(key.id); next; next = await ctx.loaders.successorByKeyId.load(next.id)) holder = next;
  return holder;
}

@Resolver(() => ApiKey)
export class ApiKeyResolver {
  @Authorized('keys:write', 'keys:own')
  @Mutation(() => CreatedApiKey)
  async createApiKey(@Arg('input', () => CreateApiKeyInput) input: CreateApiKeyInput, @Ctx() ctx: GraphQLContext, @Info() info: GraphQLResolveInfo) {
    await assertNewKeyPayloadReadable(ctx, info, async () => input.ownerId ?? ctx.principal.userId);
    const created = await ctx.services.keys.create(ctx.actor, input);
    return { apiKey: created.key, secret: created.secret };
  }

  @Query(() => ApiKey, { nullable: true })
  @Authorized('keys:read', 'keys:own')
  apiKey(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyQueries.findById(ctx.actor, id);
  }

  @Query(() => ApiKeyConnection)
  @Authorized('keys:read', 'keys:own')
  async apiKeys(
    @Ctx() ctx: GraphQLContext,
    @Arg('filter', () => ApiKeyFilter, { nullable: true }) filter?: ApiKeyFilter | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: 50 }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ) {
    const page = await ctx.services.keyQueries.list(ctx.actor, filter, first, after);
    return toConnection(page.rows, page.hasNextPage, cursorFor('k'), page.totalCount);
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => ApiKey)
  updateApiKey(@Arg('id', () => ID) id: string, @Arg('input', () => UpdateApiKeyInput) input: UpdateApiKeyInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyLifecycle.update(ctx.actor, id, input);
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => CreatedApiKey, {
    description: 'Issues a successor with the same settings; the old key keeps verifying for gracePeriodSeconds, then EXPIRED',
  })
  async rotateApiKey(
    @Arg('id', () => ID) id: string,
    @Ctx() ctx: GraphQLContext,
    @Info() info: GraphQLResolveInfo,
    @Arg('gracePeriodSeconds', () => Int, { nullable: true, defaultValue: 0 }) gracePeriodSeconds?: number | null,
  ) {
    await assertNewKeyPayloadReadable(ctx, info, async () => {
      // Read before the rotation; loaders are renewed after it, so rotatedFrom reads the key as rotated.
      const rotating = isUuid(id) ? await ctx.loaders.keyById.load(id) : null;
      return rotating?.ownerId ?? null;
    });
    const created = await ctx.services.keyLifecycle.rotate(ctx.actor, id, gracePeriodSeconds);
    return { apiKey: created.key, secret: created.secret };
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => ApiKey)
  revokeApiKey(@Arg('id', () => ID) id: string, @Arg('reason', () => String) reason: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyLifecycle.revoke(ctx.actor, id, reason);
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => Int, { description: 'Emergency: revokes every key the user and its service accounts own; returns how many' })
  revokeAllApiKeys(@Arg('userId', () => ID) userId: string, @Arg('reason', () => String) reason: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyLifecycle.revokeAll(ctx.actor, userId, reason);
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => ApiKey)
  disableApiKey(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyLifecycle.disable(ctx.actor, id);
  }

  @Authorized('keys:write', 'keys:own')
  @Mutation(() => ApiKey)
  enableApiKey(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.keyLifecycle.enable(ctx.actor, id);
  }

  @FieldResolver(() => [UsagePoint])
  async usage(
    @Root() key: ApiKeyEntity,
    @Ctx() ctx: GraphQLContext,
    @Arg('from', () => DateTimeISO, { nullable: true }) from?: Date | null,
    @Arg('to', () => DateTimeISO, { nullable: true }) to?: Date | null,
    @Arg('bucket', () => TimeBucket, { nullable: true, defaultValue: TimeBucket.HOUR }) bucket?: TimeBucket | null,
  ) {
    await assertCanReadKey(ctx, key, 'ApiKey.usage');
    const range = seriesWindow(from, to);
    return ctx.services.usage.series(key.id, range.from, range.to, bucket ?? TimeBucket.HOUR);
  }

  @FieldResolver(() => KeyStatus)
  status(@Root() key: ApiKeyEntity): KeyStatus {
    return keyStatus(key);
  }

  @FieldResolver(() => User)
  owner(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, key.ownerId, 'ApiKey.owner', { nullable: false });
  }

  @FieldResolver(() => User, { nullable: true })
  createdBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, key.createdById, 'ApiKey.createdBy');
  }

  @FieldResolver(() => User, { nullable: true })
  revokedBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, key.revokedById, 'ApiKey.revokedBy');
  }

  @FieldResolver(() => User, { nullable: true, description: 'Who disabled the key, while it is DISABLED; only they or a keys:write holder may enable it' })
  disabledBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return key.storedStatus === StoredKeyStatus.DISABLED ? visibleUser(ctx, key.disabledById, 'ApiKey.disabledBy') : null;
  }

  @FieldResolver(() => [Role])
  roles(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.rolesByKeyId.load(key.id);
  }

  @FieldResolver(() => [String], {
    description: "Effective permissions: the key's roles and granted permissions, bounded by what its owner holds now",
  })
  async permissions(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext): Promise<string[]> {
    const [keyRoles, ownerRoles] = await Promise.all([
      ctx.loaders.rolesByKeyId.load(key.id),
      ctx.loaders.rolesByUserId.load(key.ownerId),
    ]);
    const keyPermissions = normalize([...key.grantedPermissions, ...keyRoles.flatMap((r) => r.permissions)]);
    return intersect(keyPermissions, normalize(ownerRoles.flatMap((r) => r.permissions)));
  }

  @FieldResolver(() => ApiKey, { nullable: true, description: 'The key this one replaced through rotateApiKey' })
  rotatedFrom(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return key.rotatedFromId ? ctx.loaders.keyById.load(key.rotatedFromId) : null;
  }

  @FieldResolver(() => Int, { nullable: true, description: 'Verifications left; null means unlimited. A rotated key shows the quota it shares with its successor' })
  async remaining(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext): Promise<number | null> {
    // A refill that is due is applied by the next verification; what it will find is what is left now.
    return availableQuota(await quotaHolder(key, ctx), new Date());
  }

  @FieldResolver(() => ApiKey, { nullable: true, description: 'The key that replaced this one through rotateApiKey' })
  replacedBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.successorByKeyId.load(key.id);
  }

  @FieldResolver(() => RateLimit, { nullable: true, description: 'A rotated key shows the rate limit it shares with its successor' })
  async rateLimit(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext): Promise<RateLimit | null> {
    const holder = await quotaHolder(key, ctx);
    if (holder.rateLimitLimit === null || holder.rateLimitWindowSeconds === null) return null;
    return { limit: holder.rateLimitLimit, windowSeconds: holder.rateLimitWindowSeconds };
  }

  @FieldResolver(() => Refill, { nullable: true, description: 'A rotated key shows the refill of the quota it shares with its successor' })
  async refill(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext): Promise<Refill | null> {
    const holder = await quotaHolder(key, ctx);
    if (holder.refillAmount === null || holder.refillIntervalSeconds === null) return null;
    return { amount: holder.refillAmount, intervalSeconds: holder.refillIntervalSeconds, lastRefillAt: lastRefillAsOf(holder, new Date()) };
  }
}
