import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Usage rows arrive in time order at up to hundreds of thousands a second, and each btree costs
 * about a microsecond of PostgreSQL per row. Time needs no btree: a BRIN index over append-ordered
 * rows answers ranges for a sliver of the cost. Owner needs none either: a key's owner never
 * changes, so the owner's usage is their keys' usage, found through usage_events_key_time.
 */
export class UsageLeanIndexes1733100000000 implements MigrationInterface {
  name = 'UsageLeanIndexes1733100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX usage_events_owner_time;
      DROP INDEX usage_events_time;
      CREATE INDEX usage_events_time ON usage_events USING brin (occurred_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX usage_events_time;
      CREATE INDEX usage_events_time ON usage_events (occurred_at);
      CREATE INDEX usage_events_owner_time ON usage_events (owner_id, occurred_at)`);
  }
}
