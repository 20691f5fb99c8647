import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Who disabled a key, so the owner cannot undo an administrator's disable. Keys disabled before
 * take it from their latest key.disable event, sealed or still staged.
 */
export class KeyDisabledBy1733500000000 implements MigrationInterface {
  name = 'KeyDisabledBy1733500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE api_keys ADD COLUMN disabled_by_id uuid REFERENCES users (id)`);
    await q.query(`
      UPDATE api_keys k SET disabled_by_id = (
        SELECT e.actor_id FROM (
          SELECT 1 AS staged, id, actor_id FROM audit_staging WHERE action = 'key.disable' AND target_type = 'api_key' AND target_id = k.id::text
          UNION ALL
          SELECT 0, id, actor_id FROM audit_events WHERE action = 'key.disable' AND target_type = 'api_key' AND target_id = k.id::text
        ) e ORDER BY e.staged DESC, e.id DESC LIMIT 1)
       WHERE k.stored_status = 'DISABLED'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE api_keys DROP COLUMN disabled_by_id`);
  }
}
