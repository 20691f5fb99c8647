import { createHmac } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { ConfigError } from '../config';

/**
 * A different KEY_PEPPER would silently make every existing key NOT_FOUND. The database keeps a
 * fingerprint of the pepper it was created with (an HMAC of a constant, which reveals nothing) and
 * refuses to start with another one.
 */
export async function checkPepper(dataSource: DataSource, pepper: string): Promise<void> {
  const fingerprint = createHmac('sha256', pepper).update('keyledger pepper fingerprint v1').digest('hex');
  await dataSource.query(
    `INSERT INTO server_settings (name, value) VALUES ('pepper_fingerprint', $1) ON CONFLICT (name) DO NOTHING`,
    [fingerprint],
  );
  const [row] = (await dataSource.query(`SELECT value FROM server_settings WHERE name = 'pepper_fingerprint'`)) as Array<{ value: string }>;
  if (row?.value !== fingerprint) {
    throw new ConfigError('KEY_PEPPER does not match the pepper this database was created with');
  }
}
