import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A rotated key's quota lives in its successor only. Keys rotated before kept a stale copy of what
 * they had left, which nothing reads since verification takes the quota from the newest successor;
 * clearing it makes a verification that still aims at the old row follow the quota instead.
 */
export class QuotaMovesOnRotation1733700000000 implements MigrationInterface {
  name = 'QuotaMovesOnRotation1733700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      UPDATE api_keys k SET remaining = NULL, refill_amount = NULL, refill_interval_seconds = NULL, last_refill_at = NULL
       WHERE k.remaining IS NOT NULL AND EXISTS (SELECT 1 FROM api_keys s WHERE s.rotated_from_id = k.id)`);
  }

  /** Nothing to restore: the successors hold the quota, as they did. */
  async down(): Promise<void> {}
}
