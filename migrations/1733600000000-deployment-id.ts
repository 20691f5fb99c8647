import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * One id per deployment (per database): what a shared transport such as Redis pub/sub names its
 * channels after, so two deployments on one Redis never hear each other.
 */
export class DeploymentId1733600000000 implements MigrationInterface {
  name = 'DeploymentId1733600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE keyledger_deployment (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`INSERT INTO keyledger_deployment DEFAULT VALUES`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE keyledger_deployment`);
  }
}
