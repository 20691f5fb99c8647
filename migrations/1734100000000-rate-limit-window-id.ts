import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Which rate-limit window a key counts in: a new id whenever its rate-limit setting changes, so
 * going back to an earlier setting starts afresh instead of resuming that setting's old window,
 * and the successor's copy on rotation, so a line of rotations keeps sharing one. Existing keys
 * take their line's first key's id: the windows they share now stay shared.
 */
export class RateLimitWindowId1734100000000 implements MigrationInterface {
  name = 'RateLimitWindowId1734100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE api_keys ADD COLUMN rate_limit_window_id uuid`);
    await q.query(`
      WITH RECURSIVE line(id, first_id) AS (
        SELECT id, id FROM api_keys WHERE rotated_from_id IS NULL
        UNION ALL SELECT k.id, l.first_id FROM api_keys k JOIN line l ON k.rotated_from_id = l.id)
      UPDATE api_keys k SET rate_limit_window_id = line.first_id FROM line WHERE k.id = line.id`);
    await q.query(`UPDATE api_keys SET rate_limit_window_id = id WHERE rate_limit_window_id IS NULL`);
    await q.query(`ALTER TABLE api_keys ALTER COLUMN rate_limit_window_id SET DEFAULT gen_random_uuid(), ALTER COLUMN rate_limit_window_id SET NOT NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE api_keys DROP COLUMN rate_limit_window_id`);
  }
}
