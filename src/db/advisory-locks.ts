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
} as const;
