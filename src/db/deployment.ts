import type { DataSource } from 'typeorm';

/** This deployment's id (one per database, made by a migration): it names channels on shared transports. */
export async function deploymentId(dataSource: DataSource): Promise<string> {
  const [row] = (await dataSource.query('SELECT id FROM keyledger_deployment')) as Array<{ id: string }>;
  if (!row) throw new Error('keyledger_deployment has no row: run the migrations');
  return row.id;
}
