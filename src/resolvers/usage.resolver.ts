import { Arg, Authorized, Ctx, FieldResolver, ID, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import type { ApiKeyEntity } from '../entities';
import { ForbiddenError } from '../services/errors';
import { canReadKeysOf } from '../services/key-access';
import { isUuid } from '../services/validation';
import { visibleUser } from './visibility';
import { ApiKey } from '../schema/api-key.type';
import { DateTimeISO } from '../schema/scalars';
import { UsageReportRow } from '../schema/usage.type';
import { User } from '../schema/user.type';

interface ReportRow {
  key: ApiKeyEntity;
  valid: number;
  invalid: number;
}

@Resolver(() => UsageReportRow)
export class UsageResolver {
  /** keys:read reports on every key; keys:own on one's own and one's service accounts' keys. */
  @Authorized('keys:read', 'keys:own')
  @Query(() => [UsageReportRow], { description: 'Verification counts per key over a period: the basis for reporting and invoicing' })
  async usageReport(
    @Arg('from', () => DateTimeISO) from: Date,
    @Arg('to', () => DateTimeISO) to: Date,
    @Ctx() ctx: GraphQLContext,
    @Arg('ownerId', () => ID, { nullable: true }) ownerId?: string | null,
  ): Promise<ReportRow[]> {
    if (ownerId && !isUuid(ownerId)) return [];
    let ownerIds: string[] | null = ownerId ? [ownerId] : null;
    if (!coveredBy(ctx.principal.permissions, 'keys:read')) {
      const self = (await ctx.loaders.userById.load(ctx.principal.userId))!;
      const own = [self.id, ...(await ctx.loaders.serviceAccountsByOwnerId.load(self.id)).map((u) => u.id)];
      if (ownerId) {
        const owner = await ctx.loaders.userById.load(ownerId);
        if (owner && !canReadKeysOf(ctx.actor, owner)) {
          throw new ForbiddenError("keys:own reports only on your own and your service accounts' keys", { required: ['keys:read'] });
        }
      }
      ownerIds = ownerId ? own.filter((id) => id === ownerId) : own;
    }
    const rows = await ctx.services.usage.report(from, to, ownerIds);
    const keys = await ctx.loaders.keyById.loadMany(rows.map((r) => r.keyId));
    return rows.flatMap((row, i) => {
      const key = keys[i];
      return key && !(key instanceof Error) ? [{ key, valid: row.valid, invalid: row.invalid }] : [];
    });
  }

  @FieldResolver(() => ApiKey)
  key(@Root() row: ReportRow): ApiKeyEntity {
    return row.key;
  }

  @FieldResolver(() => User)
  owner(@Root() row: ReportRow, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, row.key.ownerId, 'UsageReportRow.owner', { nullable: false });
  }
}
