import { MigrationInterface, QueryRunner } from 'typeorm';
import { redactKeys } from '../src/auth/key-format';

/**
 * Names of keys, users and alert rules, roles' descriptions and alert messages are now stored with
 * key-shaped words blanked (everyone who may list them reads them); those written before are
 * blanked the same way. Not undone by down(): what was blanked is gone.
 */
export class BlankNames1733900000000 implements MigrationInterface {
  name = 'BlankNames1733900000000';

  async up(q: QueryRunner): Promise<void> {
    const columns = [
      ['api_keys', 'name'],
      ['users', 'name'],
      ['alert_rules', 'name'],
      ['roles', 'description'],
      ['alerts', 'message'],
    ] as const;
    for (const [table, column] of columns) {
      // Only rows that could hold a key (an underscore, then 25 characters of its alphabet) are read.
      const rows = (await q.query(`SELECT id, ${column} AS text FROM ${table} WHERE ${column} ~ '_[0-9A-Za-z]{25}'`)) as Array<{ id: string; text: string }>;
      for (const row of rows) {
        const blanked = redactKeys(row.text);
        if (blanked !== row.text) await q.query(`UPDATE ${table} SET ${column} = $1 WHERE id = $2`, [blanked, row.id]);
      }
    }
  }

  async down(): Promise<void> {}
}
