import 'reflect-metadata';
import { generateKey } from '../auth/key-format';
import type { DataSource } from 'typeorm';
import { ConfigError, loadConfig, type Config } from '../config';
import { createDataSource, migrate } from '../db/data-source';
import { startEmbeddedPostgres } from '../db/embedded';
import { checkPepper } from '../db/pepper-check';
import { buildKeyledgerSchema } from '../schema/build-schema';
import { applyRetention } from '../services/audit-retention';
import { SYSTEM_ACTOR } from '../services/actor';
import { AuditService } from '../services/audit.service';
import { KeyService } from '../services/key.service';
import { main as serve } from '../index';

const USAGE = `usage: keyledger <command>
  start                    serve (same as npm start)
  keygen [--prefix p]      print one new, well-formed key
  migrate                  apply pending migrations and exit
  emit-schema [path]       write the GraphQL schema (default src/schema/schema.graphql)
  audit-retention --before <date> [--dry-run]
                           drop whole months of audit events older than <date>, keeping the
                           chain verifiable (an anchor and an audit.retention event)
  recover-admin --user <name or email> --reason <text>
                           break-glass: print a new key with every permission for an active human
                           administrator (audited as key.create by SYSTEM); stop an embedded server first`;

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

/** The server's database (DATABASE_URL, or the embedded one under DATA_DIR: stop the server first), migrated. */
async function withDatabase<T>(work: (dataSource: DataSource, config: Config, applied: string[]) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const embedded = config.databaseUrl === null ? await startEmbeddedPostgres(config.dataDir) : null;
  const dataSource = createDataSource(config.databaseUrl ?? embedded!.url, { onQuery: () => {}, onError: () => {} });
  try {
    await dataSource.initialize();
    return await work(dataSource, config, await migrate(dataSource));
  } finally {
    await dataSource.destroy().catch(() => undefined);
    await embedded?.stop();
  }
}

function runMigrations(): Promise<void> {
  return withDatabase(async (_dataSource, _config, applied) => {
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'no pending migrations\n');
  });
}

/** A YYYY-MM-DD date that exists, as midnight UTC; null for anything else. */
function calendarDate(text: string): Date | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return null;
  const date = new Date(`${text}T00:00:00Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().startsWith(text) ? date : null;
}

async function auditRetention(args: string[]): Promise<void> {
  let given: string | null = null;
  let dryRun = false;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--before') {
      if (given !== null) fail('audit-retention: --before is given more than once');
      given = args[++i] ?? fail('audit-retention: --before needs a date such as 2025-01-01');
    } else if (args[i] === '--dry-run') dryRun = true;
    else fail(`audit-retention: unknown argument ${args[i]}\n${USAGE}`);
  }
  // This command deletes: a date that does not exist (2020-02-30, or a bare "1") is refused, not rolled over.
  const before = given === null ? null : calendarDate(given);
  if (!before) fail('audit-retention: --before must be a date that exists, such as 2025-01-01');
  await withDatabase(async (dataSource) => {
    const report = await applyRetention(new AuditService(dataSource), before, { dryRun });
    process.stdout.write(JSON.stringify({ dryRun, ...report }, null, 2) + '\n');
  });
}

/**
 * Break-glass: when every administrator key is lost or revoked, an operator with the server's
 * configuration issues a new key for an active human administrator. Audited like any key
 * creation (key.create by SYSTEM, the reason in the key's name); the secret is printed once.
 */
async function recoverAdmin(args: string[]): Promise<void> {
  let who: string | null = null;
  let reason: string | null = null;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--user' && args[i + 1] !== undefined) who = args[++i]!;
    else if (args[i] === '--reason' && args[i + 1] !== undefined) reason = args[++i]!;
    else fail(`recover-admin: unknown argument ${args[i]}\n${USAGE}`);
  }
  if (!who || !reason?.trim()) fail('recover-admin: --user <name or email> and --reason <text> are required');
  await withDatabase(async (dataSource, config) => {
    const weakPepper = await checkPepper(dataSource, config.keyPepper, config.keyPepperSource);
    if (weakPepper) process.stderr.write(`keyledger: warning: ${weakPepper}\n`);
    const [admin] = (await dataSource.query(
      `SELECT u.id FROM users u
         JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id AND r.name = 'admin'
        WHERE u.kind = 'HUMAN' AND u.status = 'ACTIVE' AND (u.name = $1 OR lower(u.email) = lower($1))`,
      [who],
    )) as Array<{ id: string }>;
    // Thrown, not exited: the embedded database is stopped on the way out.
    if (!admin) throw new Error(`recover-admin: no active human administrator named ${JSON.stringify(who)}`);
    const audit = new AuditService(dataSource);
    const keys = new KeyService(audit, config.keyPepper, config.keyPrefix);
    const created = await keys.create(SYSTEM_ACTOR, { ownerId: admin.id, name: `recovery: ${reason!.trim()}`.slice(0, 200), permissions: ['*'] });
    await audit.close();
    process.stdout.write(`${created.secret}\n`);
  });
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
    case 'recover-admin':
      return recoverAdmin(args);
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
