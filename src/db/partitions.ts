import type { DataSource } from 'typeorm';
import { ADVISORY_LOCKS } from './advisory-locks';

/** What the partition functions need: a DataSource, or a transaction's EntityManager. */
interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/** Partition maintenance on one instance at a time: two creating the same month would collide. */
const PARTITION_LOCK = ADVISORY_LOCKS.partitions;

const MONTHS_AHEAD = 2;

function monthStart(year: number, month: number): Date {
  return new Date(Date.UTC(year, month, 1));
}

/**
 * Creates monthly partitions of usage_events from this month to MONTHS_AHEAD ahead, so rows never
 * land in the default partition (which would block creating the partition for their month later).
 */
export async function ensureUsagePartitions(dataSource: Queryable, now = new Date()): Promise<string[]> {
  const created: string[] = [];
  for (let i = 0; i <= MONTHS_AHEAD; i++) {
    const from = monthStart(now.getUTCFullYear(), now.getUTCMonth() + i);
    const to = monthStart(from.getUTCFullYear(), from.getUTCMonth() + 1);
    const name = `usage_events_${from.getUTCFullYear()}_${String(from.getUTCMonth() + 1).padStart(2, '0')}`;
    const [exists] = (await dataSource.query('SELECT to_regclass($1) AS oid', [name])) as Array<{ oid: string | null }>;
    if (exists?.oid) continue;
    // Names and bounds come from dates computed here, never from input.
    await dataSource.query(
      `CREATE TABLE IF NOT EXISTS ${name} PARTITION OF usage_events FOR VALUES FROM ('${from.toISOString()}') TO ('${to.toISOString()}')`,
    );
    created.push(name);
  }
  return created;
}

/**
 * Monthly audit_events partitions from last month to three months ahead, made by the function
 * the migration defines (idempotent). Events outside them go to audit_events_default.
 */
export async function ensureAuditPartitions(dataSource: Queryable): Promise<number> {
  const [row] = (await dataSource.query(
    `SELECT keyledger_audit_partitions(now() - interval '1 month', now() + interval '3 months') AS made`,
  )) as Array<{ made: number }>;
  return row?.made ?? 0;
}

/**
 * Every month partition this server keeps ahead. Each table in its own short transaction under
 * PARTITION_LOCK: creating a partition locks its parent exclusively, so it gives up (and is
 * retried at the next round) rather than queue every writer behind a long reader.
 */
export async function maintainPartitions(dataSource: DataSource, now = new Date()): Promise<void> {
  const locked = (work: (tx: Queryable) => Promise<unknown>) =>
    dataSource.transaction(async (tx) => {
      await tx.query(`SET LOCAL lock_timeout = '5s'`);
      await tx.query('SELECT pg_advisory_xact_lock($1)', [PARTITION_LOCK]);
      await work(tx);
    });
  const results = await Promise.allSettled([locked((tx) => ensureUsagePartitions(tx, now)), locked((tx) => ensureAuditPartitions(tx))]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
