import type { AuditEventEntity } from '../entities';
import { sqlLiteral } from './sql-literal';

/**
 * Counts of audit events by action, outcome and target type, per UTC hour and per UTC day, kept
 * by the sealer in the same transaction that appends the events: `auditCounts` over months adds
 * up a few thousand rows instead of scanning millions. Only these low-cardinality columns are
 * rolled up: by actor, key or address the raw events (and their indexes) answer.
 */
export interface RollupLevel {
  table: string;
  /** the table's bucket column, and date_trunc's unit for it */
  column: string;
  unit: 'hour' | 'day';
  millis: number;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export const HOURLY: RollupLevel = { table: 'audit_counts_hourly', column: 'hour', unit: 'hour', millis: HOUR };
export const DAILY: RollupLevel = { table: 'audit_counts_daily', column: 'day', unit: 'day', millis: DAY };
/** Coarsest first: a range takes whole days from DAILY, then whole hours, then raw events. */
export const ROLLUP_LEVELS: readonly RollupLevel[] = [DAILY, HOURLY];

export const floorTo = (date: Date, millis: number) => new Date(Math.floor(date.getTime() / millis) * millis);
export const ceilTo = (date: Date, millis: number) => new Date(Math.ceil(date.getTime() / millis) * millis);
export const floorHour = (date: Date) => floorTo(date, HOUR);
export const ceilHour = (date: Date) => ceilTo(date, HOUR);
export const floorDay = (date: Date) => floorTo(date, DAY);
export const ceilDay = (date: Date) => ceilTo(date, DAY);

/** Part of a time range, [from, to) with null for unbounded, and where its counts come from (null: the events). */
export interface RangeSegment {
  level: RollupLevel | null;
  from: Date | null;
  to: Date | null;
}

/**
 * Splits [from, to) into the whole buckets of the coarsest level that fits, and edges covered the
 * same way by finer levels, down to raw events for partial hours.
 */
export function coverRange(from: Date | null, to: Date | null, levels: readonly RollupLevel[] = ROLLUP_LEVELS): RangeSegment[] {
  if (from && to && from.getTime() >= to.getTime()) return [];
  const [level, ...finer] = levels;
  if (!level) return [{ level: null, from, to }];
  const start = from && ceilTo(from, level.millis);
  const end = to && floorTo(to, level.millis);
  if (start && end && start.getTime() >= end.getTime()) return coverRange(from, to, finer);
  return [
    ...(from && start!.getTime() > from.getTime() ? coverRange(from, start, finer) : []),
    { level, from: start, to: end },
    ...(to && end!.getTime() < to.getTime() ? coverRange(end, to, finer) : []),
  ];
}

/** Adds events already stored after `afterId` to every level (a bench that seeds by SQL). */
export function rollupBackfill(afterId = 0): string {
  return ROLLUP_LEVELS.map(
    (level) => `
  INSERT INTO ${level.table} (${level.column}, action, outcome, target_type, count)
  SELECT date_trunc('${level.unit}', occurred_at, 'UTC'), action, outcome, target_type, count(*)
    FROM audit_events WHERE id > ${Math.trunc(afterId)} GROUP BY 1, 2, 3, 4
  ON CONFLICT (${level.column}, action, outcome, target_type) DO UPDATE SET count = ${level.table}.count + excluded.count`,
  ).join(';\n');
}

/** The upserts adding one sealed batch to every level: literals only, they ride on the seal's commit. */
export function rollupStatement(events: readonly AuditEventEntity[]): string {
  return ROLLUP_LEVELS.map((level) => levelStatement(level, events)).join(';\n');
}

function levelStatement(level: RollupLevel, events: readonly AuditEventEntity[]): string {
  const counts = new Map<string, { bucket: Date; action: string; outcome: string; targetType: string | null; count: number }>();
  for (const event of events) {
    const bucket = floorTo(event.occurredAt, level.millis);
    const id = JSON.stringify([bucket.getTime(), event.action, event.outcome, event.targetType]);
    const entry = counts.get(id);
    if (entry) entry.count++;
    else counts.set(id, { bucket, action: event.action, outcome: event.outcome, targetType: event.targetType, count: 1 });
  }
  const rows = [...counts.values()].map(
    (c) => `(${sqlLiteral(c.bucket.toISOString())}::timestamptz, ${sqlLiteral(c.action)}, ${sqlLiteral(c.outcome)}, ${sqlLiteral(c.targetType)}, ${c.count})`,
  );
  return `INSERT INTO ${level.table} (${level.column}, action, outcome, target_type, count) VALUES ${rows.join(', ')}
    ON CONFLICT (${level.column}, action, outcome, target_type) DO UPDATE SET count = ${level.table}.count + excluded.count`;
}
