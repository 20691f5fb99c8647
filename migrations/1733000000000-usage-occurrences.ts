import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Identical verifications in the same millisecond (same key, owner, code, address and resource)
 * are one usage row with a count: a hot key verified thousands of times a second writes tens of
 * rows, not thousands, and every count and time stays exact to the millisecond it was before.
 */
export class UsageOccurrences1733000000000 implements MigrationInterface {
  name = 'UsageOccurrences1733000000000';

  async up(q: QueryRunner): Promise<void> {
    // A constant default and no CHECK: the column is added without rewriting or scanning a partition.
    await q.query(`ALTER TABLE usage_events ADD COLUMN occurrences integer NOT NULL DEFAULT 1`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE usage_events DROP COLUMN occurrences');
  }
}
