import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import type { AuditEventEntity } from '../entities';
import type { AuditRecord } from '../services/audit.service';
import { encodeAuditCursor } from '../services/audit-query.service';
import type { ReadPlan } from '../services/read-plan';
import { ApiKey } from '../schema/api-key.type';
import { AuditEventFilter } from '../schema/audit-event.input';
import { AuditCount, AuditEvent, AuditEventConnection, AuditIntegrityReport, TimeCount } from '../schema/audit-event.type';
import { toConnection } from '../schema/connection.type';
import { AuditGroupBy, SortOrder, TimeBucket } from '../schema/enums';
import { DateTimeISO } from '../schema/scalars';
import { User } from '../schema/user.type';
import { assertCanReadKey, visibleUser } from './visibility';
import { quoteInput } from '../auth/key-format';

/**
 * Auditors' queries are audited too (audit.query, the filter in details). Input is checked first;
 * then the read and its event go to the database as one statement (AuditService.auditedRead):
 * the answer leaves only once the event is committed, and the event is not in its own answer.
 */
function audited<T>(ctx: GraphQLContext, query: string, filter: AuditEventFilter | null | undefined, details: Record<string, unknown>, read: ReadPlan<T>): Promise<T> {
  return ctx.services.audit.auditedRead(ctx.actor, queryRecord(query, details), read, ctx.services.auditQueries.stagedMatch(filter));
}

function queryRecord(query: string, details: Record<string, unknown>): AuditRecord {
  return { action: 'audit.query', targetType: 'audit', details: { query, ...details } };
}

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
    // Building the plan refuses bad input (BAD_USER_INPUT) before anything is read or recorded.
    const page = await audited(ctx, 'auditEvents', filter, { filter: filter ?? null, first, order, paged: Boolean(after) },
      ctx.services.auditQueries.listPlan(filter, first, after, order ?? SortOrder.DESC),
    );
    return toConnection(page.rows, page.hasNextPage, (row) => encodeAuditCursor(row.id));
  }

  @Authorized('audit:read')
  @Query(() => [AuditCount])
  async auditCounts(
    @Ctx() ctx: GraphQLContext,
    @Arg('groupBy', () => AuditGroupBy) groupBy: AuditGroupBy,
    @Arg('filter', () => AuditEventFilter, { nullable: true }) filter?: AuditEventFilter | null,
    @Arg('limit', () => Int, { nullable: true, defaultValue: 20 }) limit?: number | null,
  ) {
    return audited(ctx, 'auditCounts', filter, { filter: filter ?? null, groupBy, limit }, ctx.services.auditReports.countsPlan(filter, groupBy, limit));
  }

  @Authorized('audit:read')
  @Query(() => [TimeCount])
  async auditTimeline(
    @Ctx() ctx: GraphQLContext,
    @Arg('bucket', () => TimeBucket) bucket: TimeBucket,
    @Arg('filter', () => AuditEventFilter, { nullable: true }) filter?: AuditEventFilter | null,
  ) {
    return audited(ctx, 'auditTimeline', filter, { filter: filter ?? null, bucket }, ctx.services.auditReports.timelinePlan(filter, bucket));
  }

  @Authorized('audit:read')
  @Query(() => AuditIntegrityReport, { description: 'Recomputes the hash chain over the range and reports the first break' })
  async auditIntegrity(
    @Ctx() ctx: GraphQLContext,
    @Arg('from', () => DateTimeISO, { nullable: true }) from?: Date | null,
    @Arg('to', () => DateTimeISO, { nullable: true }) to?: Date | null,
  ) {
    await ctx.services.audit.settled();
    const report = await ctx.services.auditReports.integrity(from, to);
    await ctx.services.audit.recordAlone(ctx.actor, queryRecord('auditIntegrity', { from: from ?? null, to: to ?? null, ok: report.ok, checkedEvents: report.checkedEvents }));
    return report;
  }

  @Authorized('audit:read')
  @Query(() => AuditEvent, { nullable: true })
  async auditEvent(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    await ctx.services.audit.settled();
    const event = await ctx.services.auditQueries.findById(id);
    // Reading one event is an audit query like any other; no answer unless it is recorded.
    await ctx.services.audit.recordAlone(ctx.actor, queryRecord('auditEvent', { id: quoteInput(id, 40), found: event !== null }));
    return event;
  }

  @FieldResolver(() => User, { nullable: true })
  actor(@Root() event: AuditEventEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, event.actorId, 'AuditEvent.actor');
  }

  @FieldResolver(() => ApiKey, { nullable: true })
  async actorKey(@Root() event: AuditEventEntity, @Ctx() ctx: GraphQLContext) {
    const key = event.actorKeyId ? await ctx.loaders.keyById.load(event.actorKeyId) : null;
    if (key) await assertCanReadKey(ctx, key, 'AuditEvent.actorKey');
    return key;
  }
}
