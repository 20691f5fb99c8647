import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * detailsContains reads the GIN index on details. With fastupdate on, new entries wait in the
 * index's pending list (up to 4 MB a partition), which every query reads through in full: on a
 * freshly filled month that made a containment query 90 ms instead of 2 ms (measured on 1 M
 * events). Sealing writes events in batches off every request's path, so it can afford to put
 * each entry in its place at once. The option is set on the partitioned index, so each
 * partition's index made later inherits it (PostgreSQL cannot change it on a partitioned index:
 * the index is rebuilt).
 */
export class AuditDetailsIndex1733300000000 implements MigrationInterface {
  name = 'AuditDetailsIndex1733300000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX audit_events_details;
      CREATE INDEX audit_events_details ON audit_events USING gin (details jsonb_path_ops) WITH (fastupdate = off)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX audit_events_details;
      CREATE INDEX audit_events_details ON audit_events USING gin (details jsonb_path_ops)`);
  }
}
