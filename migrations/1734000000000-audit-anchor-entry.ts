import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * An anchor also records where its removed run began: the run's first event and the hash that
 * event linked to. Integrity then checks the link into the gap as well as the link out of it, so
 * a kept event just before a removed run cannot be deleted unseen. Anchors made before this have
 * neither (both stay NULL) and are checked as before.
 */
export class AuditAnchorEntry1734000000000 implements MigrationInterface {
  name = 'AuditAnchorEntry1734000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE audit_chain_anchors
        ADD COLUMN first_id bigint,
        ADD COLUMN entry_hash text,
        ADD CONSTRAINT audit_chain_anchors_entry_whole CHECK ((first_id IS NULL) = (entry_hash IS NULL) AND first_id <= last_id)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE audit_chain_anchors
        DROP CONSTRAINT audit_chain_anchors_entry_whole,
        DROP COLUMN entry_hash,
        DROP COLUMN first_id`);
  }
}
