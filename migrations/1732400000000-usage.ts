import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Verification usage: high volume, append-mostly, read by time range per key. Partitioned by
 * month so old months can be detached cheaply; the server creates upcoming partitions at start.
 */
export class Usage1732400000000 implements MigrationInterface {
  name = 'Usage1732400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE usage_events (
        occurred_at timestamptz NOT NULL,
        key_id uuid,
        owner_id uuid,
        code text NOT NULL,
        ip text,
        resource text
      ) PARTITION BY RANGE (occurred_at);
      CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
      CREATE INDEX usage_events_key_time ON usage_events (key_id, occurred_at);
      CREATE INDEX usage_events_owner_time ON usage_events (owner_id, occurred_at);
      CREATE INDEX usage_events_time ON usage_events (occurred_at);
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE usage_events');
  }
}
