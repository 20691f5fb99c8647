import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Audit events are written in each change's transaction to audit_staging (no lock, so writers
 * never queue behind one another's commits), then sealed into the hash chain of audit_events in
 * batches by one sealer at a time. Public ids are assigned at sealing, so they grow in the order
 * events become visible and cursors never skip a late commit.
 */
export class AuditStaging1732600000000 implements MigrationInterface {
  name = 'AuditStaging1732600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE audit_staging (
        id bigserial PRIMARY KEY,
        occurred_at timestamptz NOT NULL,
        action text NOT NULL,
        outcome text NOT NULL CHECK (outcome IN ('SUCCESS', 'DENIED', 'FAILURE')),
        actor_type text NOT NULL CHECK (actor_type IN ('USER', 'SYSTEM', 'ANONYMOUS')),
        actor_id uuid,
        actor_key_id uuid,
        target_type text,
        target_id text,
        ip text CHECK (ip IS NULL OR ip::inet IS NOT NULL),
        user_agent text,
        request_id text,
        details jsonb
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE audit_staging');
  }
}
