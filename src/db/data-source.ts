import { DataSource, MigrationExecutor, type Logger as TypeOrmLogger } from 'typeorm';
import { MIGRATIONS } from '../../migrations';
import { ENTITIES } from '../entities';
import { ADVISORY_LOCKS } from './advisory-locks';

export interface QueryObserver {
  onQuery(): void;
  onError(message: string): void;
}

/** Counts every statement (the N+1 test and /metrics read it) and logs failures without their parameters. */
function observingLogger(observer: QueryObserver): TypeOrmLogger {
  return {
    logQuery: () => observer.onQuery(),
    logQueryError: (error) => observer.onError(typeof error === 'string' ? error : error.message),
    logQuerySlow: () => {},
    logSchemaBuild: () => {},
    logMigration: () => {},
    log: () => {},
  };
}

/** How long a new connection to PostgreSQL may take before the request needing it fails (503) */
const CONNECT_TIMEOUT_MS = 5000;

export function createDataSource(url: string, observer: QueryObserver, poolSize = 20): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    synchronize: false,
    logging: ['query', 'error'],
    logger: observingLogger(observer),
    // A database that accepts connections and never answers must not hold requests for ever.
    extra: { max: poolSize, application_name: 'keyledger', connectionTimeoutMillis: CONNECT_TIMEOUT_MS },
  });
}

const MIGRATION_LOCK = ADVISORY_LOCKS.migration;
/** How long a migration waits for a table lock before it gives up (live traffic would queue behind it) */
const MIGRATION_LOCK_TIMEOUT_MS = 10_000;
/** SQLSTATE 55P03: lock_timeout expired */
const LOCK_NOT_AVAILABLE = '55P03';
/** UNIQUE NULLS NOT DISTINCT (the audit rollups) arrived in PostgreSQL 15. */
export const MIN_POSTGRES_VERSION = 150_000;

/** Why this PostgreSQL cannot hold keyledger's schema, or null when it can. */
export function postgresVersionProblem(versionNum: number, version: string): string | null {
  return versionNum >= MIN_POSTGRES_VERSION ? null : `keyledger needs PostgreSQL 15 or later; this server is ${version}`;
}

async function assertSupportedPostgres(dataSource: DataSource): Promise<void> {
  const [row] = (await dataSource.query(
    `SELECT current_setting('server_version_num')::int AS num, current_setting('server_version') AS version`,
  )) as Array<{ num: number; version: string }>;
  const problem = postgresVersionProblem(row!.num, row!.version);
  if (problem) throw new Error(problem);
}

/** Applies pending migrations; an advisory lock keeps instances that start together from racing. */
export async function migrate(dataSource: DataSource): Promise<string[]> {
  // Refused up front: a migration half-way would fail on syntax the server does not know.
  await assertSupportedPostgres(dataSource);
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    // Another instance migrating is waited for as long as it takes.
    await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    // A table lock is not: while an ALTER waits behind a long transaction, every query of that
    // table queues behind the ALTER. The migration gives up instead, and nothing of it stays.
    await runner.query(`SET lock_timeout = '${MIGRATION_LOCK_TIMEOUT_MS}ms'`);
    const executor = new MigrationExecutor(dataSource, runner);
    executor.transaction = 'each';
    try {
      return (await executor.executePendingMigrations()).map((m) => m.name);
    } catch (error) {
      if ((error as { driverError?: { code?: string } }).driverError?.code !== LOCK_NOT_AVAILABLE) throw error;
      // Migrations commit one by one: the first still pending is the one that waited.
      const [waited] = await executor.getPendingMigrations().catch(() => []);
      throw new Error(
        `migration ${waited?.name ?? '(unknown)'} waited ${MIGRATION_LOCK_TIMEOUT_MS / 1000} s for a table lock another session holds: ` +
          `it was rolled back; start again once that session's transaction ends (pg_locks shows who holds it)`,
      );
    }
  } finally {
    await runner.query('RESET lock_timeout').catch(() => undefined);
    await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await runner.release();
  }
}

export async function hasPendingMigrations(dataSource: DataSource): Promise<boolean> {
  return dataSource.showMigrations();
}
