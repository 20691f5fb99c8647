import { Arg, Authorized, Ctx, FieldResolver, Mutation, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { intersect, normalize } from '../auth/permissions';
import type { ApiKeyEntity } from '../entities';
import { KeyStatus, StoredKeyStatus, assertNever } from '../entities/enums';
import { CreateApiKeyInput } from '../schema/api-key.input';
import { ApiKey, CreatedApiKey, RateLimit, Refill } from '../schema/api-key.type';
import { Role } from '../schema/role.type';
import { User } from '../schema/user.type';

/** Status is derived at read time: a key past expiresAt is EXPIRED without any job. */
export function keyStatus(key: ApiKeyEntity, now = new Date()): KeyStatus {
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

@Resolver(() => ApiKey)
export class ApiKeyResolver {
  @Authorized('keys:write', 'keys:own')
  @Mutation(() => CreatedApiKey)
  async createApiKey(@Arg('input', () => CreateApiKeyInput) input: CreateApiKeyInput, @Ctx() ctx: GraphQLContext) {
    const created = await ctx.services.keys.create(ctx.actor, input);
    return { apiKey: created.key, secret: created.secret };
  }

  @FieldResolver(() => KeyStatus)
  status(@Root() key: ApiKeyEntity): KeyStatus {
    return keyStatus(key);
  }

  @FieldResolver(() => User)
  owner(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.userById.load(key.ownerId);
  }

  @FieldResolver(() => User, { nullable: true })
  createdBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return key.createdById ? ctx.loaders.userById.load(key.createdById) : null;
  }

  @FieldResolver(() => User, { nullable: true })
  revokedBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return key.revokedById ? ctx.loaders.userById.load(key.revokedById) : null;
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

  @FieldResolver(() => ApiKey, { nullable: true, description: 'The key that replaced this one through rotateApiKey' })
  replacedBy(@Root() key: ApiKeyEntity, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.successorByKeyId.load(key.id);
  }

  @FieldResolver(() => RateLimit, { nullable: true })
  rateLimit(@Root() key: ApiKeyEntity): RateLimit | null {
    if (key.rateLimitLimit === null || key.rateLimitWindowSeconds === null) return null;
    return { limit: key.rateLimitLimit, windowSeconds: key.rateLimitWindowSeconds };
  }

  @FieldResolver(() => Refill, { nullable: true })
  refill(@Root() key: ApiKeyEntity): Refill | null {
    if (key.refillAmount === null || key.refillIntervalSeconds === null) return null;
    return { amount: key.refillAmount, intervalSeconds: key.refillIntervalSeconds, lastRefillAt: key.lastRefillAt };
  }
}
