import type { DataSource } from 'typeorm';

/**
 * PostgreSQL advisory lock ids, in one place so no two uses can share one by accident. Each is
 * taken with pg_advisory_xact_lock (or the session form for migrations) by every instance.
 */
export const ADVISORY_LOCKS = {
  /** Migrations: one instance migrates, the others wait */
  migration: 7_400_001,
  /** The audit chain's append (sealing) and retention */
  auditChain: 7_400_002,
  /** Creating the bootstrap administrator */
  bootstrap: 7_400_003,
  /** Creating and detaching partitions */
  partitions: 7_400_004,
  /** Checking that a change leaves an active administrator, and making it */
  lastAdmin: 7_400_005,
  /** A retention run, whole: a second run waits for the first, then finds its months gone */
  auditRetention: 7_400_006,
} as const;

/** Runs `work` holding a session-level advisory lock, on a connection of its own that does nothing else. */
export async function withSessionLock<T>(dataSource: DataSource, lock: number, work: () => Promise<T>): Promise<T> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('SELECT pg_advisory_lock($1)', [lock]);
    try {
      return await work();
    } finally {
      await runner.query('SELECT pg_advisory_unlock($1)', [lock]).catch(() => undefined);
    }
  } finally {
    await runner.release();
  }
}
