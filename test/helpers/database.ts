import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

export function adminUrl(): string {
  const url = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!url) throw new Error('TEST_DATABASE_URL is not set: run the tests with npm test');
  return url;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export interface TestDatabase {
  name: string;
  url: string;
  /** A superuser client on this database, for what only a test may do (triggers, inspecting tables) */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  drop(): Promise<void>;
}

/** A fresh, empty database per test file, so files run in any order and in parallel. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `kl_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl(), name);
  const client = new Client({ connectionString: url });
  await client.connect();
  return {
    name,
    url,
    query: async <T>(sql: string, params: unknown[] = []) => (await client.query(sql, params)).rows as T[],
    drop: async () => {
      await client.end();
      const dropper = new Client({ connectionString: adminUrl() });
      await dropper.connect();
      try {
        await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}

export interface HeldLock {
  /** Commits the holding transaction; safe to call more than once */
  release(): Promise<void>;
}

/**
 * Takes a lock (a `LOCK TABLE` or an advisory lock) in a transaction on a connection of its own and
 * holds it until release: how a test stops the server at a chosen point to force an interleaving.
 */
export async function holdLock(url: string, statement: string, params: unknown[] = []): Promise<HeldLock> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query(statement, params);
  } catch (error) {
    await client.end();
    throw error;
  }
  let released: Promise<void> | null = null;
  return {
    release: () =>
      (released ??= (async () => {
        try {
          await client.query('COMMIT');
        } finally {
          await client.end();
        }
      })()),
  };
}
