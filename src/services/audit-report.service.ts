import type { DataSource } from 'typeorm';
import { AuditGroupBy, assertNever } from '../entities/enums';
import { applyAuditFilter, type AuditEventFilter } from './audit-query.service';
import { AuditIntegrity, type IntegrityReport } from './audit-integrity';
import { ROLLUP_LEVELS, coverRange, type RollupLevel } from './audit-rollup';
import { BadInputError } from './errors';
import { shiftParameters, type ReadPlan } from './read-plan';
import { SqlConditions } from './sql-conditions';

export type { IntegrityReport } from './audit-integrity';
export type TimeBucketName = 'MINUTE' | 'HOUR' | 'DAY';

const NONE = '(none)';
/** Group-bys the rollups can answer (their columns) */
const ROLLED_UP = new Set([AuditGroupBy.ACTION, AuditGroupBy.OUTCOME, AuditGroupBy.TARGET_TYPE]);
export const MAX_GROUPS = 1000;
export const DEFAULT_GROUPS = 20;
export const MAX_BUCKETS = 100_000;
export const BUCKET_MILLIS: Record<TimeBucketName, number> = { MINUTE: 60_000, HOUR: 3_600_000, DAY: 86_400_000 };

function groupLimit(limit: number | null | undefined): number {
  const size = limit ?? DEFAULT_GROUPS;
  if (!Number.isInteger(size) || size < 1 || size > MAX_GROUPS) {
    throw new BadInputError('limit', `limit must be between 1 and ${MAX_GROUPS}`);
  }
  return size;
}

function groupColumn(groupBy: AuditGroupBy): string {
  switch (groupBy) {
    case AuditGroupBy.ACTION:
      return 'e.action';
    case AuditGroupBy.ACTOR:
      return 'e.actor_id::text';
    case AuditGroupBy.ACTOR_KEY:
      return 'e.actor_key_id::text';
    case AuditGroupBy.OUTCOME:
      return 'e.outcome';
    case AuditGroupBy.TARGET_TYPE:
      return 'e.target_type';
    case AuditGroupBy.IP:
      return 'e.ip';
    default:
      return assertNever(groupBy);
  }
}

/** Aggregates and the integrity check over the audit log; the same filter as the event list. */
export class AuditReportService {
  constructor(private readonly dataSource: DataSource) {}

  countsPlan(filter: AuditEventFilter | null | undefined, groupBy: AuditGroupBy, limit: number | null | undefined): ReadPlan<Array<{ key: string; count: number }>> {
    const size = groupLimit(limit);
    const column = groupColumn(groupBy);
    const rolledUp = ROLLED_UP.has(groupBy) ? this.fromRollups(filter, ROLLUP_LEVELS, () => `coalesce(${column}, '${NONE}')`, 'key') : null;
    const [sql, params] = rolledUp
      ? [`SELECT key, sum(count)::int AS count FROM (${rolledUp.sql}) parts GROUP BY key ORDER BY count DESC, key ASC LIMIT ${size}`, rolledUp.params]
      : this.eventsQuery(filter, `coalesce(${column}, '${NONE}')`, 'key', `ORDER BY count DESC, key ASC LIMIT ${size}`);
    return { sql, params, order: 'r.count DESC, r.key ASC', marker: 'key', finish: (rows) => rows as Array<{ key: string; count: number }> };
  }

  /** Non-empty buckets in time order; their counts add up to the filter's number of events. */
  timelinePlan(filter: AuditEventFilter | null | undefined, bucket: TimeBucketName): ReadPlan<Array<{ start: Date; count: number }>> {
    const unit = { MINUTE: 'minute', HOUR: 'hour', DAY: 'day' }[bucket];
    const tooMany = () => new BadInputError('bucket', `at most ${MAX_BUCKETS} buckets: choose a larger bucket or a shorter range`);
    if (filter?.from && filter.to && (filter.to.getTime() - filter.from.getTime()) / BUCKET_MILLIS[bucket] > MAX_BUCKETS) throw tooMany();
    // A rollup serves buckets as coarse as its own or coarser.
    const levels = ROLLUP_LEVELS.filter((level) => level.millis <= BUCKET_MILLIS[bucket]);
    const rolledUp = this.fromRollups(filter, levels, (time) => `date_trunc('${unit}', ${time}, 'UTC')`, 'start');
    const [sql, params] = rolledUp
      ? [`SELECT start, sum(count)::int AS count FROM (${rolledUp.sql}) parts GROUP BY start ORDER BY start ASC LIMIT ${MAX_BUCKETS + 1}`, rolledUp.params]
      : this.eventsQuery(filter, `date_trunc('${unit}', e.occurred_at, 'UTC')`, 'start', `ORDER BY 1 ASC LIMIT ${MAX_BUCKETS + 1}`);
    // An open range can hold more buckets than one answer: refused whole rather than cut short.
    const finish = (rows: Array<Record<string, unknown>>) => {
      if (rows.length > MAX_BUCKETS) throw tooMany();
      return rows as Array<{ start: Date; count: number }>;
    };
    return { sql, params, order: 'r.start ASC', marker: 'start', finish };
  }

  /** Events matching the filter, counted per `group` (named `name`), then `tail` (order and limit). */
  private eventsQuery(filter: AuditEventFilter | null | undefined, group: string, name: string, tail: string): [string, unknown[]] {
    const where = new SqlConditions();
    applyAuditFilter(where, filter);
    return [`SELECT ${group} AS "${name}", count(*)::int AS count FROM audit_events e ${where.where} GROUP BY 1 ${tail}`, where.params];
  }

  /**
   * One statement (one snapshot) whose parts count the range: whole days and hours from the
   * rollups, partial hours at either end from the events (see coverRange). Each part yields
   * `<name>` (from `group`, given the part's time column) and `count`. Null when the filter names
   * something the rollups do not keep (actor, key, target id, address, details) or no rollup fits.
   */
  private fromRollups(
    filter: AuditEventFilter | null | undefined,
    levels: readonly RollupLevel[],
    group: (timeColumn: string) => string,
    name: string,
  ): { sql: string; params: unknown[] } | null {
    const f = filter ?? {};
    // The same tests applyAuditFilter makes: an empty actorId still filters (to nothing).
    if (f.actorId != null || f.actorKeyId != null || f.targetId || f.ip || f.detailsContains) return null;
    // A backwards range has no segments: the raw path refuses it.
    const segments = coverRange(f.from ?? null, f.to ?? null, levels);
    if (!segments.some((segment) => segment.level)) return null;
    const sql: string[] = [];
    const params: unknown[] = [];
    for (const { level, from, to } of segments) {
      const where = new SqlConditions();
      let select: string;
      if (level) {
        select = `SELECT ${group(`e.${level.column}`)} AS "${name}", sum(e.count) AS count FROM ${level.table} e`;
        applyAuditFilter(where, { actions: f.actions, outcome: f.outcome, targetType: f.targetType });
        if (from) where.andWhere(`e.${level.column} >= :from`, { from });
        if (to) where.andWhere(`e.${level.column} < :to`, { to });
      } else {
        select = `SELECT ${group('e.occurred_at')} AS "${name}", count(*) AS count FROM audit_events e`;
        applyAuditFilter(where, { ...f, from, to });
      }
      sql.push(shiftParameters(`${select} ${where.where} GROUP BY 1`, params.length));
      params.push(...where.params);
    }
    return { sql: sql.join(' UNION ALL '), params };
  }

  /** The chain, its head and the counts, checked over the range (AuditIntegrity). */
  integrity(from: Date | null | undefined, to: Date | null | undefined): Promise<IntegrityReport> {
    return new AuditIntegrity(this.dataSource.manager).check(from, to);
  }
}
