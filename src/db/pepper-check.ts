import { createHmac } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { ConfigError } from '../config';

const MIN_DISTINCT_CHARACTERS = 8;

/**
 * Why a pepper is plainly not random (a placeholder such as `xxxx…` or `changemechangeme…`), or
 * null. It cannot prove randomness; it refuses what no generator would produce.
 */
export function pepperWeakness(pepper: string): string | null {
  if (new Set(pepper).size < MIN_DISTINCT_CHARACTERS) return `uses fewer than ${MIN_DISTINCT_CHARACTERS} distinct characters`;
  for (let period = 1; period <= pepper.length / 2; period++) {
    if (pepper.slice(period) === pepper.slice(0, pepper.length - period)) return 'repeats a short pattern';
  }
  return null;
}

/**
 * A different KEY_PEPPER would silently make every existing key NOT_FOUND. The database keeps a
 * fingerprint of the pepper it was created with (an HMAC of a constant, which reveals nothing) and
 * refuses to start with another one. A weak pepper is refused for a new database; a database
 * already created with one keeps working (its keys are hashed with it), and the weakness is
 * returned so the caller can warn.
 */
export async function checkPepper(dataSource: DataSource, pepper: string): Promise<string | null> {
  const fingerprint = createHmac('sha256', pepper).update('keyledger pepper fingerprint v1').digest('hex');
  const weakness = pepperWeakness(pepper);
  const stored = async () =>
    ((await dataSource.query(`SELECT value FROM server_settings WHERE name = 'pepper_fingerprint'`)) as Array<{ value: string }>)[0]?.value;
  let existing = await stored();
  if (existing === undefined) {
    if (weakness) throw new ConfigError(`KEY_PEPPER ${weakness}: use 32 or more random bytes (openssl rand -base64 32)`);
    await dataSource.query(
      `INSERT INTO server_settings (name, value) VALUES ('pepper_fingerprint', $1) ON CONFLICT (name) DO NOTHING`,
      [fingerprint],
    );
    existing = await stored();
  }
  if (existing !== fingerprint) {
    throw new ConfigError('KEY_PEPPER does not match the pepper this database was created with');
  }
  return weakness && `KEY_PEPPER ${weakness}; this database was created with it, so its keys still verify. Plan a move to a random pepper (every key must then be reissued).`;
}
