import type { EntityManager } from 'typeorm';
import { SYSTEM_ACTOR, type Actor } from './actor';
import { ADVISORY_LOCKS, withSessionLock } from '../db/advisory-locks';
import { CHAIN_LOCK, type AuditService } from './audit.service';
import { ROLLUP_LEVELS } from './audit-rollup';
import { AuditIntegrity, type Anchor } from './audit-integrity';

export interface RetentionReport {
  removedPartitions: string[];
  removedEvents: number;
  /** Usually one; more when months overlap in the chain (late commits, skewed clocks). */
  anchors: Anchor[];
  /**
   * Anchors earlier runs made, named again: this run may drop the month holding the event that
   * named them, and integrity honours an anchor only while an event in the chain names it.
   */
  carriedAnchors: Anchor[];
}

const MONTH_PARTITION = /^audit_events_(\d{4})_(\d{2})$/;

/** The UTC month a partition named audit_events_YYYY_MM holds. */
function monthOf(name: string): { start: Date; end: Date } {
  const [, year, month] = MONTH_PARTITION.exec(name)!;
  return { start: new Date(Date.UTC(Number(year), Number(month) - 1, 1)), end: new Date(Date.UTC(Number(year), Number(month), 1)) };
}

/** Month partitions wholly older than `before`, oldest first. Names come from the catalogue and match MONTH_PARTITION. */
async function monthsBefore(tx: EntityManager, before: Date): Promise<{ old: string[]; kept: string[] }> {
  const rows = (await tx.query(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_events'::regclass ORDER BY c.relname`,
  )) as Array<{ name: string }>;
  const old: string[] = [];
  const kept: string[] = [];
  for (const { name } of rows) {
    const month = MONTH_PARTITION.test(name) ? monthOf(name) : null;
    if (month && month.end.getTime() <= before.getTime()) old.push(name);
    else if (month || name === 'audit_events_default') kept.push(name);
  }
  return { old, kept };
}

/**
 * Retention takes the anchors' hashes from the events it removes: it refuses to remove events
 * whose chain does not verify, which would otherwise vanish with the evidence of a change.
 */
async function refuseIfBroken(db: EntityManager, before: Date, attempts = 3): Promise<void> {
  const { old } = await monthsBefore(db, before);
  if (old.length === 0) return;
  let range: { low: string | null; high: string | null } | undefined;
  try {
    [range] = (await db.query(
      `SELECT min(id)::text AS low, max(id)::text AS high FROM (${old.map((name) => `SELECT id FROM ${name}`).join(' UNION ALL ')}) r`,
    )) as Array<{ low: string | null; high: string | null }>;
  } catch (error) {
    // A month a run of an older release (which takes no turn) has just removed: what is left is checked.
    if (attempts > 1 && (error as { driverError?: { code?: string } }).driverError?.code === UNDEFINED_TABLE) return refuseIfBroken(db, before, attempts - 1);
    throw error;
  }
  if (!range || range.low === null || range.high === null) return;
  const report = await new AuditIntegrity(db).checkIds(range.low, range.high);
  if (!report.ok) {
    throw new AuditChainBrokenError(`the audit chain does not verify where events would be removed (${report.problem}); nothing was removed: see auditIntegrity`);
  }
}

export class AuditChainBrokenError extends Error {}

const UNDEFINED_TABLE = '42P01';

/**
 * Removes whole months of audit events older than `before` and leaves a chain that still verifies.
 * Ids follow sealing order while months follow occurred_at, so months can overlap in the chain
 * (an event committed late, clocks apart): every removed event that a kept event links to, or that
 * is the chain's head, is kept as an anchor (its id and hash, and where its run began), and
 * integrity checks the links into and out of each gap.
 * The removal is an audit event (audit.retention) in the same transaction, under the chain lock.
 * Months are detached and dropped, never deleted row by row (the table refuses that).
 */
export async function applyRetention(
  audit: AuditService,
  before: Date,
  { actor = SYSTEM_ACTOR, dryRun = false, now = new Date() }: { actor?: Actor; dryRun?: boolean; now?: Date } = {},
): Promise<RetentionReport> {
  // A typo of a year must not drop this month or future ones (their events would land in default).
  const thisMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  if (!(before.getTime() <= thisMonth)) throw new RangeError('before must not be later than the start of the current month (UTC)');
  // Runs on several instances at once would check months another run is dropping.
  return withSessionLock(audit.dataSource, ADVISORY_LOCKS.auditRetention, () => retain(audit, before, actor, dryRun));
}

async function retain(audit: AuditService, before: Date, actor: Actor, dryRun: boolean): Promise<RetentionReport> {
  let report: RetentionReport = { removedPartitions: [], removedEvents: 0, anchors: [], carriedAnchors: [] };
  // Verified first, outside a transaction: not under the lock sealing waits on (a month takes a
  // while), and holding no lock on a month while the check reads on other connections (a DETACH
  // waiting for that lock would hold those reads up, and neither would give way). What is committed
  // is sealed first, so an earlier run's retention event is in the chain to account for its gaps.
  await audit.seal();
  await refuseIfBroken(audit.dataSource.manager, before);
  await audit.transaction(async (tx) => {
    // Detaching needs the table to itself: give up rather than queue every writer behind a long read.
    await tx.query(`SET LOCAL lock_timeout = '5s'`);
    await tx.query('SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    const { old, kept } = await monthsBefore(tx, before);
    if (old.length > 0) {
      const removed = old.map((name) => `SELECT id, hash, prev_hash FROM ${name}`).join(' UNION ALL ');
      const [{ events }] = (await tx.query(`SELECT count(*)::int AS events FROM (${removed}) r`)) as Array<{ events: number }>;
      // The oldest kept event, one index probe per kept partition.
      let oldestKept: bigint | null = null;
      for (const name of kept) {
        const [{ id }] = (await tx.query(`SELECT min(id)::text AS id FROM ${name}`)) as Array<{ id: string | null }>;
        if (id !== null && (oldestKept === null || BigInt(id) < oldestKept)) oldestKept = BigInt(id);
      }
      // Removed events below the oldest kept one are followed by removed ones, except the last of them:
      // only from there on can a removed event be followed by a kept one (or be the head).
      const [{ from }] = (await tx.query(
        `SELECT coalesce(max(id), 0)::text AS from FROM (${removed}) r WHERE $1::bigint IS NULL OR r.id < $1::bigint`,
        [oldestKept?.toString() ?? null],
      )) as Array<{ from: string }>;
      // Where each run began: the first removed event above the nearest kept one below its last.
      const keptBelow = kept.length === 0 ? 'NULL::bigint' : `greatest(${kept.map((name) => `(SELECT max(id) FROM ${name} WHERE id < r.id)`).join(', ')})`;
      const anchors = (await tx.query(
        `SELECT r.id::text AS "lastId", r.hash, f.id::text AS "firstId", f.prev_hash AS "entryHash"
           FROM (${removed}) r
           LEFT JOIN LATERAL (SELECT e.id, e.tableoid::regclass::text AS part FROM audit_events e WHERE e.id > r.id ORDER BY e.id LIMIT 1) n ON true
           CROSS JOIN LATERAL (SELECT x.id, x.prev_hash FROM (${removed}) x WHERE x.id > coalesce(${keptBelow}, 0) AND x.id <= r.id ORDER BY x.id LIMIT 1) f
          WHERE r.id >= $2::bigint AND (n.id IS NULL OR n.part <> ALL($1::text[]))
          ORDER BY r.id`,
        [old, from],
      )) as Required<Anchor>[];
      // Only anchors an event in the chain names now: carrying one added by hand would vouch for it.
      const integrity = new AuditIntegrity(tx);
      const carriedAnchors: Anchor[] = [];
      for (const anchor of await integrity.storedAnchors()) if (await integrity.anchorIsNamed(anchor)) carriedAnchors.push(anchor);
      report = { removedPartitions: old, removedEvents: events, anchors, carriedAnchors };
      if (dryRun) return;
      for (const anchor of anchors) {
        await tx.query('INSERT INTO audit_chain_anchors (last_id, hash, first_id, entry_hash, removed_before, removed_events) VALUES ($1, $2, $3, $4, $5, $6)', [
          anchor.lastId,
          anchor.hash,
          anchor.firstId,
          anchor.entryHash,
          before,
          events,
        ]);
      }
      // The rollups forget exactly the events dropped: those of the same months imported into the
      // default partition stay, and stay counted (integrity holds the counts to the events).
      for (const name of old) {
        for (const level of ROLLUP_LEVELS) {
          await tx.query(`
            WITH removed AS (
              SELECT date_trunc('${level.unit}', occurred_at, 'UTC') AS bucket, action, outcome, target_type, count(*) AS n
                FROM ${name} GROUP BY 1, 2, 3, 4)
            UPDATE ${level.table} r SET count = r.count - removed.n FROM removed
             WHERE r.${level.column} = removed.bucket AND r.action = removed.action AND r.outcome = removed.outcome
               AND r.target_type IS NOT DISTINCT FROM removed.target_type`);
          await tx.query(`DELETE FROM ${level.table} WHERE count <= 0`);
        }
      }
      for (const name of old) {
        await tx.query(`ALTER TABLE audit_events DETACH PARTITION ${name}`);
        await tx.query(`DROP TABLE ${name}`);
      }
    }
    if (dryRun) return;
    // Who ran retention, and with what cut-off, is part of the trail even when nothing was old enough.
    await audit.record(tx, actor, { action: 'audit.retention', targetType: 'audit', details: { before: before.toISOString(), ...report } });
    // Sealed before this returns: integrity honours the anchors only once a sealed event names them.
  }, { waitForSeal: true });
  return report;
}
