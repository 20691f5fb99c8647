import { MigrationInterface, QueryRunner } from 'typeorm';
import { redactKeys } from '../src/auth/key-format';

/**
 * Reasons are now stored with key-shaped words blanked ("leaked: <the key>" is what people write
 * there); those written before are blanked the same way. The audit log's copies always were.
 * Not undone by down(): what was blanked is gone.
 */
export class BlankReasons1733400000000 implements MigrationInterface {
  name = 'BlankReasons1733400000000';

  async up(q: QueryRunner): Promise<void> {
    for (const [table, column] of [['api_keys', 'revoke_reason'], ['users', 'disabled_reason']] as const) {
      // Only rows that could hold a key (an underscore, then 25 characters of its alphabet) are read.
      const rows = (await q.query(`SELECT id, ${column} AS reason FROM ${table} WHERE ${column} ~ '_[0-9A-Za-z]{25}'`)) as Array<{ id: string; reason: string }>;
      for (const row of rows) {
        const blanked = redactKeys(row.reason);
        if (blanked !== row.reason) await q.query(`UPDATE ${table} SET ${column} = $1 WHERE id = $2`, [blanked, row.id]);
      }
    }
  }

  async down(): Promise<void> {}
}
