import type { EntityManager } from 'typeorm';
import { SYSTEM_ACTOR, type Actor } from './actor';
import { CHAIN_LOCK, type AuditService } from './audit.service';

export interface RetentionReport {
  removedPartitions: string[];
  removedEvents: number;
  /** The last removed event: what the first kept event links to */
  anchor: { lastId: string; hash: string } | null;
  /** Months that are old enough but were kept, and why */
  kept: string[];
}

interface PartitionSpan {
  name: string;
  /** Start of the month after the partition's: everything in it is older */
  until: Date | null;
  minId: bigint | null;
  maxId: bigint | null;
  events: number;
}

const MONTH_PARTITION = /^audit_events_(\d{4})_(\d{2})$/;

async function spans(tx: EntityManager): Promise<PartitionSpan[]> {
  const names = (await tx.query(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_events'::regclass ORDER BY c.relname`,
  )) as Array<{ name: string }>;
  const result: PartitionSpan[] = [];
  for (const { name } of names) {
    // Names come from the catalogue and match a fixed pattern (or are the default partition).
    if (name !== 'audit_events_default' && !MONTH_PARTITION.test(name)) continue;
    const [row] = (await tx.query(`SELECT min(id)::text AS min, max(id)::text AS max, count(*)::int AS events FROM ${name}`)) as Array<{
      min: string | null;
      max: string | null;
      events: number;
    }>;
    const month = MONTH_PARTITION.exec(name);
    result.push({
      name,
      until: month ? new Date(Date.UTC(Number(month[1]), Number(month[2]), 1)) : null,
      minId: row!.min === null ? null : BigInt(row!.min),
      maxId: row!.max === null ? null : BigInt(row!.max),
      events: row!.events,
    });
  }
  return result;
}

/**
 * Removes whole months of audit events older than `before`, leaving a chain that still verifies:
 * the removed events must be a prefix of the chain (no kept event older in the chain than a removed
 * one), the last removed event's id and hash are kept as an anchor that the first kept event links
 * to, and the removal is itself an audit event (audit.retention) in the same transaction. Months
 * are detached and dropped, never deleted row by row (the table refuses that).
 */
export async function applyRetention(
  audit: AuditService,
  before: Date,
  { actor = SYSTEM_ACTOR, dryRun = false }: { actor?: Actor; dryRun?: boolean } = {},
): Promise<RetentionReport> {
  let report: RetentionReport = { removedPartitions: [], removedEvents: 0, anchor: null, kept: [] };
  await audit.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    const all = await spans(tx);
    const old = all.filter((s) => s.until !== null && s.until.getTime() <= before.getTime()).sort((a, b) => a.until!.getTime() - b.until!.getTime());
    const removed: PartitionSpan[] = [];
    const kept: string[] = [];
    for (const candidate of old) {
      const next = [...removed, candidate];
      const maxRemoved = next.reduce<bigint | null>((m, s) => (s.maxId !== null && (m === null || s.maxId > m) ? s.maxId : m), null);
      const minKept = all
        .filter((s) => !next.includes(s))
        .reduce<bigint | null>((m, s) => (s.minId !== null && (m === null || s.minId < m) ? s.minId : m), null);
      if (maxRemoved !== null && minKept !== null && maxRemoved > minKept) {
        kept.push(`${candidate.name}: holds events that follow kept ones in the chain`);
        break;
      }
      removed.push(candidate);
    }
    const lastId = removed.reduce<bigint | null>((m, s) => (s.maxId !== null && (m === null || s.maxId > m) ? s.maxId : m), null);
    let anchor: RetentionReport['anchor'] = null;
    if (lastId !== null) {
      const [row] = (await tx.query('SELECT hash FROM audit_events WHERE id = $1', [lastId.toString()])) as Array<{ hash: string }>;
      anchor = { lastId: lastId.toString(), hash: row!.hash };
    }
    report = { removedPartitions: removed.map((s) => s.name), removedEvents: removed.reduce((n, s) => n + s.events, 0), anchor, kept };
    if (dryRun || removed.length === 0) return;
    if (anchor) {
      await tx.query(
        'INSERT INTO audit_chain_anchors (last_id, hash, removed_before, removed_events) VALUES ($1, $2, $3, $4)',
        [anchor.lastId, anchor.hash, removed.at(-1)!.until, report.removedEvents],
      );
    }
    for (const span of removed) {
      await tx.query(`ALTER TABLE audit_events DETACH PARTITION ${span.name}`);
      await tx.query(`DROP TABLE ${span.name}`);
    }
    await tx.query('DELETE FROM audit_counts_hourly WHERE hour < $1', [removed.at(-1)!.until]);
    await audit.record(tx, actor, {
      action: 'audit.retention',
      targetType: 'audit',
      details: { before: before.toISOString(), removedPartitions: report.removedPartitions, removedEvents: report.removedEvents, anchor, kept },
    });
  });
  return report;
}
