import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Where each audit forwarder (one row per destination) has got to: the id of the last event the
 * destination accepted. Kept in the database so delivery resumes there after a restart.
 */
export class ForwarderCursor1732500000000 implements MigrationInterface {
  name = 'ForwarderCursor1732500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE forwarder_cursors (
        name text PRIMARY KEY,
        last_event_id bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE forwarder_cursors');
  }
}
