import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * audit_counts_daily: the rollup by UTC day, beside the hourly one, so counts over months add up
 * tens of rows per day instead of hundreds (see audit-rollup.ts). Filled from the hourly rollup.
 * Instances of an earlier version do not keep it: stop them all before this upgrade.
 */
export class AuditDailyRollup1732900000000 implements MigrationInterface {
  name = 'AuditDailyRollup1732900000000';

  async up(q: QueryRunner): Promise<void> {
    // Under the chain lock (7400002): no seal may commit between the copy and the new table's use.
    await q.query(`
      SELECT pg_advisory_xact_lock(7400002);
      CREATE TABLE audit_counts_daily (
        day timestamptz NOT NULL,
        action text NOT NULL,
        outcome text NOT NULL,
        target_type text,
        count bigint NOT NULL,
        UNIQUE NULLS NOT DISTINCT (day, action, outcome, target_type)
      );
      INSERT INTO audit_counts_daily (day, action, outcome, target_type, count)
      SELECT date_trunc('day', hour, 'UTC'), action, outcome, target_type, sum(count)
        FROM audit_counts_hourly GROUP BY 1, 2, 3, 4;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE audit_counts_daily');
  }
}
