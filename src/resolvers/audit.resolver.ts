import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import type { AuditEventEntity } from '../entities';
import { encodeAuditCursor } from '../services/audit-query.service';
import { ApiKey } from '../schema/api-key.type';
import { AuditEventFilter } from '../schema/audit-event.input';
import { AuditEvent, AuditEventConnection } from '../schema/audit-event.type';
import { toConnection } from '../schema/connection.type';
import { SortOrder } from '../schema/enums';
import { User } from '../schema/user.type';

@Resolver(() => AuditEvent)
export class AuditResolver {
  @Authorized('audit:read')
  @Query(() => AuditEventConnection)
  async auditEvents(
    @Ctx() ctx: GraphQLContext,
    @Arg('filter', () => AuditEventFilter, { nullable: true }) filter?: AuditEventFilter | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: 50 }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
    @Arg('order', () => SortOrder, { nullable: true, defaultValue: SortOrder.DESC }) order?: SortOrder | null,
  ) {
    const page = await ctx.services.auditQueries.list(filter, first, after, order ?? SortOrder.DESC);
    return toConnection(page.rows, page.hasNextPage, (row) => encodeAuditCursor(row.id));
  }

  @Authorized('audit:read')
  @Query(() => AuditEvent, { nullable: true })
  auditEvent(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.auditQueries.findById(id);
  }

  @FieldResolver(() => User, { nullable: true })
  actor(@Root() event: AuditEventEntity, @Ctx() ctx: GraphQLContext) {
    return event.actorId ? ctx.loaders.userById.load(event.actorId) : null;
  }

  @FieldResolver(() => ApiKey, { nullable: true })
  actorKey(@Root() event: AuditEventEntity, @Ctx() ctx: GraphQLContext) {
    return event.actorKeyId ? ctx.loaders.keyById.load(event.actorKeyId) : null;
  }
}
