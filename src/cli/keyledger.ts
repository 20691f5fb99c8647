import 'reflect-metadata';
import { generateKey } from '../auth/key-format';
import { ConfigError, loadConfig } from '../config';
import { createDataSource, migrate } from '../db/data-source';
import { startEmbeddedPostgres } from '../db/embedded';
import { buildKeyledgerSchema } from '../schema/build-schema';
import { applyRetention } from '../services/audit-retention';
import { AuditService } from '../services/audit.service';
import { main as serve } from '../index';

const USAGE = `usage: keyledger <command>
  start                    serve (same as npm start)
  keygen [--prefix p]      print one new, well-formed key
  migrate                  apply pending migrations and exit
  emit-schema [path]       write the GraphQL schema (default src/schema/schema.graphql)
  audit-retention --before <date> [--dry-run]
                           drop whole months of audit events older than <date>, keeping the
                           chain verifiable (an anchor and an audit.retention event)`;

function fail(message: string, code = 2): never {
  process.stderr.write(`keyledger: ${message}\n`);
  process.exit(code);
}

function keygen(args: string[]): void {
  let prefix = process.env.KEY_PREFIX?.trim() || 'kl';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--prefix' && args[i + 1] !== undefined) prefix = args[++i]!;
    else if (args[i]?.startsWith('--prefix=')) prefix = args[i]!.slice('--prefix='.length);
    else fail(`keygen: unknown argument ${args[i]}\n${USAGE}`);
  }
  try {
    process.stdout.write(generateKey(prefix) + '\n');
  } catch {
    fail('keygen: --prefix must be 2-12 lowercase letters or digits');
  }
}

async function runMigrations(): Promise<void> {
  const config = loadConfig();
  const embedded = config.databaseUrl === null ? await startEmbeddedPostgres(config.dataDir) : null;
  const dataSource = createDataSource(config.databaseUrl ?? embedded!.url, { onQuery: () => {}, onError: () => {} });
  try {
    await dataSource.initialize();
    const applied = await migrate(dataSource);
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'no pending migrations\n');
  } finally {
    await dataSource.destroy().catch(() => undefined);
    await embedded?.stop();
  }
}

async function auditRetention(args: string[]): Promise<void> {
  let before: Date | null = null;
  let dryRun = false;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--before' && args[i + 1] !== undefined) before = new Date(args[++i]!);
    else if (args[i] === '--dry-run') dryRun = true;
    else fail(`audit-retention: unknown argument ${args[i]}\n${USAGE}`);
  }
  if (!before || Number.isNaN(before.getTime())) fail('audit-retention: --before must be a date such as 2025-01-01');
  const config = loadConfig();
  const embedded = config.databaseUrl === null ? await startEmbeddedPostgres(config.dataDir) : null;
  const dataSource = createDataSource(config.databaseUrl ?? embedded!.url, { onQuery: () => {}, onError: () => {} });
  try {
    await dataSource.initialize();
    await migrate(dataSource);
    const report = await applyRetention(new AuditService(dataSource), before, { dryRun });
    process.stdout.write(JSON.stringify({ dryRun, ...report }, null, 2) + '\n');
  } finally {
    await dataSource.destroy().catch(() => undefined);
    await embedded?.stop();
  }
}

async function run(argv: string[]): Promise<void> {
  const [command = 'start', ...args] = argv;
  switch (command) {
    case 'start':
      return serve();
    case 'keygen':
      return keygen(args);
    case 'migrate':
      return runMigrations();
    case 'audit-retention':
      return auditRetention(args);
    case 'emit-schema':
      await buildKeyledgerSchema(args[0] ?? 'src/schema/schema.graphql');
      return;
    case 'help':
    case '--help':
      process.stdout.write(USAGE + '\n');
      return;
    default:
      fail(`unknown command ${command}\n${USAGE}`);
  }
}

run(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof ConfigError) fail(`configuration error: ${error.message}`, 78);
  fail(error instanceof Error ? error.message : String(error), 1);
});
