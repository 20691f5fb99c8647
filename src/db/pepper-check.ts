import { createHmac } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { ConfigError } from '../config';

const MIN_DISTINCT_CHARACTERS = 8;
/** Words placeholders are made of: six letters or more, which a random base64 pepper holds by chance about once in ten million. */
const PLACEHOLDER_WORDS = /change[\W_]?(?:me|it|this)|secret|random|password|example|default|replace|placeholder|keyledger/i;

/** The share of a string's three-character pieces that occurred earlier in it. */
function repeatedTrigrams(text: string): number {
  const seen = new Set<string>();
  let repeated = 0;
  for (let i = 0; i + 3 <= text.length; i++) {
    const trigram = text.slice(i, i + 3);
    if (seen.has(trigram)) repeated++;
    else seen.add(trigram);
  }
  return repeated / Math.max(1, text.length - 2);
}

/** The share of neighbouring characters one code point apart (abcd…, 9876…). */
function consecutiveSteps(text: string): number {
  let steps = 0;
  for (let i = 1; i < text.length; i++) if (Math.abs(text.charCodeAt(i) - text.charCodeAt(i - 1)) === 1) steps++;
  return steps / Math.max(1, text.length - 1);
}

/**
 * Why a pepper is plainly not random (a placeholder, a repeated phrase, a keyboard or alphabet
 * run), or null. It cannot prove randomness; it refuses what no generator would produce (the
 * chance that 32 random hex characters are refused is about one in thirty million).
 */
export function pepperWeakness(pepper: string): string | null {
  if (new Set(pepper).size < MIN_DISTINCT_CHARACTERS) return `uses fewer than ${MIN_DISTINCT_CHARACTERS} distinct characters`;
  if (repeatedTrigrams(pepper) >= 0.25) return 'repeats a pattern';
  if (consecutiveSteps(pepper) >= 0.6) return 'runs through consecutive characters';
  // Not which word: on a database that keeps such a pepper, this is logged.
  if (PLACEHOLDER_WORDS.test(pepper)) return 'reads like a placeholder (a word such as change, secret or password)';
  return null;
}

/**
 * A different KEY_PEPPER would silently make every existing key NOT_FOUND. The database keeps a
 * fingerprint of the pepper it was created with (an HMAC of a constant, which reveals nothing) and
 * refuses to start with another one. A weak pepper is refused for a new database; a database
 * already created with one keeps working (its keys are hashed with it), and the weakness is
 * returned so the caller can warn.
 */
export async function checkPepper(dataSource: DataSource, pepper: string, source = 'KEY_PEPPER'): Promise<string | null> {
  const fingerprint = createHmac('sha256', pepper).update('keyledger pepper fingerprint v1').digest('hex');
  const weakness = pepperWeakness(pepper);
  const stored = async () =>
    ((await dataSource.query(`SELECT value FROM server_settings WHERE name = 'pepper_fingerprint'`)) as Array<{ value: string }>)[0]?.value;
  let existing = await stored();
  if (existing === undefined) {
    if (weakness) throw new ConfigError(`${source} ${weakness}: use 32 or more random bytes (openssl rand -base64 32)`);
    await dataSource.query(
      `INSERT INTO server_settings (name, value) VALUES ('pepper_fingerprint', $1) ON CONFLICT (name) DO NOTHING`,
      [fingerprint],
    );
    existing = await stored();
  }
  if (existing !== fingerprint) {
    throw new ConfigError(`${source} does not match the pepper this database was created with`);
  }
  return weakness && `${source} ${weakness}; this database was created with it, so its keys still verify. Plan a move to a random pepper (every key must then be reissued).`;
}
