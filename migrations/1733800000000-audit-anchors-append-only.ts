import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Anchors bridge the gaps retention leaves in the chain, so they are as append-only as the events
 * they stand for: a row changed or removed by hand would hide or fake a gap. (Integrity also
 * honours an anchor only when a sealed audit.retention event names it.)
 */
export class AuditAnchorsAppendOnly1733800000000 implements MigrationInterface {
  name = 'AuditAnchorsAppendOnly1733800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
          USING ERRCODE = 'insufficient_privilege';
      END $$;
      CREATE TRIGGER audit_chain_anchors_no_update_delete BEFORE UPDATE OR DELETE ON audit_chain_anchors
        FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
      CREATE TRIGGER audit_chain_anchors_no_truncate BEFORE TRUNCATE ON audit_chain_anchors
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TRIGGER audit_chain_anchors_no_truncate ON audit_chain_anchors;
      DROP TRIGGER audit_chain_anchors_no_update_delete ON audit_chain_anchors;
      CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
          USING ERRCODE = 'insufficient_privilege';
      END $$;`);
  }
}
