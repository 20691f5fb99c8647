import type { AuditEventEntity } from '../entities';
import { sqlLiteral } from './sql-literal';

/**
 * Hourly counts of audit events by action, outcome and target type, kept by the sealer in the same
 * transaction that appends the events, so `auditCounts` over months adds up a few thousand rows
 * instead of scanning millions. Only these low-cardinality columns are rolled up: by actor, key
 * or address the raw events (and their indexes) answer.
 */
export const ROLLUP_TABLE = 'audit_counts_hourly';

/** Adds events already stored after `afterId` to the rollup (the migration, and a bench that seeds by SQL). */
export function rollupBackfill(afterId = 0): string {
  return `
  INSERT INTO audit_counts_hourly (hour, action, outcome, target_type, count)
  SELECT date_trunc('hour', occurred_at, 'UTC'), action, outcome, target_type, count(*)
    FROM audit_events WHERE id > ${Math.trunc(afterId)} GROUP BY 1, 2, 3, 4
  ON CONFLICT (hour, action, outcome, target_type) DO UPDATE SET count = audit_counts_hourly.count + excluded.count`;
}

const HOUR = 3_600_000;

export const floorHour = (date: Date) => new Date(Math.floor(date.getTime() / HOUR) * HOUR);
export const ceilHour = (date: Date) => new Date(Math.ceil(date.getTime() / HOUR) * HOUR);

/** The upsert adding one sealed batch to the rollup: literals only, it rides on the seal's commit. */
export function rollupStatement(events: readonly AuditEventEntity[]): string {
  const counts = new Map<string, { hour: Date; action: string; outcome: string; targetType: string | null; count: number }>();
  for (const event of events) {
    const hour = floorHour(event.occurredAt);
    const id = JSON.stringify([hour.getTime(), event.action, event.outcome, event.targetType]);
    const entry = counts.get(id);
    if (entry) entry.count++;
    else counts.set(id, { hour, action: event.action, outcome: event.outcome, targetType: event.targetType, count: 1 });
  }
  const rows = [...counts.values()].map(
    (c) => `(${sqlLiteral(c.hour.toISOString())}::timestamptz, ${sqlLiteral(c.action)}, ${sqlLiteral(c.outcome)}, ${sqlLiteral(c.targetType)}, ${c.count})`,
  );
  return `INSERT INTO audit_counts_hourly (hour, action, outcome, target_type, count) VALUES ${rows.join(', ')}
    ON CONFLICT (hour, action, outcome, target_type) DO UPDATE SET count = audit_counts_hourly.count + excluded.count`;
}
