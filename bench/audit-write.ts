/**
 * Audited writes per second with 32 concurrent writers, against the same work without its audit
 * insert, in one run on one database; then checks the chain is intact. Three measures:
 *   1. one INSERT per transaction, in this process: the audit's cost at its most visible;
 *   2. RoleService.create, in this process: the mutation's service work, no HTTP or GraphQL;
 *   3. the createRole mutation over GraphQL-over-HTTP with autocannon (32 connections) against a
 *      real server process, and against the same server with its audit insert switched off
 *      (bench/lib/server-unaudited): what the issue calls audited mutations per second.
 * Usage: npm run bench:audit-write  (DATABASE_URL or embedded PostgreSQL; DURATION_S, WRITERS, ROUNDS)
 */
import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import type { DataSource, EntityManager } from 'typeorm';
import { createDataSource, migrate } from '../src/db/data-source';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { AuditReportService } from '../src/services/audit-report.service';
import { AuditService } from '../src/services/audit.service';
import { RoleService } from '../src/services/role.service';
import { generateKey } from '../src/auth/key-format';
import { createBenchDatabase, type BenchDatabase } from './lib/bench-database';
import { cpuSeconds, postgresCpuSeconds, startKeyledger, startProcess, withServer, type Running } from './lib/processes';
import { percentile } from './lib/stats';

const WRITERS = Number(process.env.WRITERS ?? 32);
const DURATION_MS = Number(process.env.DURATION_S ?? 5) * 1000;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
/** Only part 3 (createRole over HTTP): for comparing changes to the audited path */
const HTTP_ONLY = process.env.HTTP_ONLY === '1';

function median(values: number[]): number {
  return percentile(values, 50);
}

/** The change every writer makes: one role row, as createRole does. */
async function change(tx: EntityManager): Promise<string> {
  const name = `bench-${randomUUID()}`;
  const [row] = (await tx.query(`INSERT INTO roles (name, permissions) VALUES ($1, '{invoices:read}') RETURNING id`, [name])) as Array<{ id: string }>;
  return row!.id;
}

async function run(dataSource: DataSource, audited: boolean, audit: AuditService): Promise<number> {
  let done = 0;
  const deadline = Date.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (Date.now() < deadline) {
        if (audited) {
          // As every mutation does: change + staged event in one transaction, sealed after commit.
          await audit.transaction(async (tx) => {
            const id = await change(tx);
            await audit.record(tx, SYSTEM_ACTOR, { action: 'role.create', targetType: 'role', targetId: id, details: { bench: true } });
          });
        } else {
          await dataSource.transaction((tx) => change(tx));
        }
        done++;
      }
    }),
  );
  return done / (DURATION_MS / 1000);
}

/** The same service with its audit insert switched off: the baseline for createRole. */
class UnauditedService extends AuditService {
  override async record(): Promise<void> {}
  override async transaction<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    return this.db.transaction(work);
  }
  constructor(readonly db: DataSource) {
    super(db);
  }
}

/** createRole through RoleService (validation, name check, insert, audit), as the mutation runs it. */
async function runCreateRole(dataSource: DataSource, audit: AuditService): Promise<number> {
  const roles = new RoleService(dataSource, audit);
  let done = 0;
  const deadline = Date.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (Date.now() < deadline) {
        await roles.create(SYSTEM_ACTOR, { name: `bench-${randomUUID()}`, permissions: ['invoices:read'] });
        done++;
      }
    }),
  );
  return done / (DURATION_MS / 1000);
}

/** Part 3: createRole over HTTP against a real server, audited and with the audit insert off. */
interface HttpRound {
  perSecond: number;
  /** CPU milliseconds per createRole, of the server process and of PostgreSQL; null without /proc */
  serverMs: number | null;
  postgresMs: number | null;
}

async function overHttp(db: BenchDatabase, dataSource: DataSource): Promise<{ audited: HttpRound[]; unaudited: HttpRound[] }> {
  const adminKey = generateKey('kl');
  const env = { DATABASE_URL: db.url, KEY_PEPPER: randomBytes(32).toString('hex'), BOOTSTRAP_ADMIN_KEY: adminKey };
  const roleCount = async () => ((await dataSource.query('SELECT count(*)::int AS n FROM roles')) as Array<{ n: number }>)[0]!.n;
  const once = (start: () => Promise<Running>): Promise<HttpRound> =>
    withServer(start, async (server) => {
      const query = 'mutation($input: CreateRoleInput!) { createRole(input: $input) { id name } }';
      const options = {
        url: `${server.base}/graphql`,
        method: 'POST' as const,
        connections: WRITERS,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
        // Every request a new role name (autocannon's idReplacement sends nothing here).
        requests: [{ setupRequest: (request: object) => ({ ...request, body: JSON.stringify({ query, variables: { input: { name: `bench-${randomUUID()}`, permissions: ['invoices:read'] } } }) }) }],
      };
      await autocannon({ ...options, duration: 2 }); // warm-up
      const settle = () => new Promise((resolve) => setTimeout(resolve, 300)); // requests autocannon stopped counting land
      await settle();
      const before = await roleCount();
      const serverBefore = cpuSeconds(server.child.pid);
      const postgresBefore = postgresCpuSeconds();
      const result = await autocannon({ ...options, duration: DURATION_MS / 1000 });
      const serverAfter = cpuSeconds(server.child.pid);
      const postgresAfter = postgresCpuSeconds();
      await settle();
      // GraphQL errors answer 200: every answered request must have created its role (and at most
      // the requests still in flight when autocannon stopped counting may have created one more).
      const created = (await roleCount()) - before;
      const answered = result.requests.total;
      if (result.non2xx + result.errors > 0 || created < answered || created > answered + WRITERS) {
        throw new Error(`createRole failed: ${answered} answered, ${created} roles created, ${result.non2xx + result.errors} errors`);
      }
      const perRequest = (start: number | null, end: number | null) => (start === null || end === null ? null : ((end - start) * 1000) / answered);
      return { perSecond: answered / (DURATION_MS / 1000), serverMs: perRequest(serverBefore, serverAfter), postgresMs: perRequest(postgresBefore, postgresAfter) };
    });
  const audited: HttpRound[] = [];
  const unaudited: HttpRound[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    unaudited.push(await once(() => startProcess('dist/bench/lib/server-unaudited.js', env)));
    audited.push(await once(() => startKeyledger(env)));
  }
  return { audited, unaudited };
}

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  (dataSource.options.extra as { max: number }).max = WRITERS + 4;
  await dataSource.initialize();
  try {
    await migrate(dataSource);
    const audit = new AuditService(dataSource);
    console.log(`writers=${WRITERS} duration=${DURATION_MS / 1000}s rounds=${ROUNDS}`);
    const list = (values: number[]) => values.map((v) => v.toFixed(0)).join(', ');
    if (!HTTP_ONLY) {
      await run(dataSource, true, audit); // warm-up
      // Alternating rounds, medians: one pair of runs on this machine swings by +-20 %.
      const unaudited: number[] = [];
      const audited: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        unaudited.push(await run(dataSource, false, audit));
        audited.push(await run(dataSource, true, audit));
      }
      const roleUnaudited = await runCreateRole(dataSource, new UnauditedService(dataSource));
      const roleAudited = await runCreateRole(dataSource, audit);
      console.log(`unaudited: ${list(unaudited)} tx/s (median ${median(unaudited).toFixed(0)})`);
      console.log(`audited:   ${list(audited)} tx/s (median ${median(audited).toFixed(0)})`);
      console.log(`ratio of medians audited/unaudited: ${(median(audited) / median(unaudited)).toFixed(2)} (target >= 0.8)`);
      console.log(`createRole unaudited: ${roleUnaudited.toFixed(0)}/s, audited: ${roleAudited.toFixed(0)}/s, ratio ${(roleAudited / roleUnaudited).toFixed(2)}`);
    }
    await audit.close();
    const http = await overHttp(db, dataSource);
    const integrity = await new AuditReportService(dataSource).integrity(null, null);
    const rates = (rounds: HttpRound[]) => rounds.map((round) => round.perSecond);
    const [unauditedRate, auditedRate] = [median(rates(http.unaudited)), median(rates(http.audited))];
    console.log(`createRole over GraphQL/HTTP, ${WRITERS} connections: unaudited ${list(rates(http.unaudited))}/s, audited ${list(rates(http.audited))}/s (medians ${unauditedRate.toFixed(0)} and ${auditedRate.toFixed(0)}): ratio ${(auditedRate / unauditedRate).toFixed(2)} (target >= 0.8)`);
    const cpu = (rounds: HttpRound[], part: 'serverMs' | 'postgresMs') => {
      const values = rounds.map((round) => round[part]).filter((value): value is number => value !== null);
      return values.length === rounds.length ? `${median(values).toFixed(3)} ms` : 'n/a';
    };
    console.log(`  CPU per createRole (medians), server / PostgreSQL: unaudited ${cpu(http.unaudited, 'serverMs')} / ${cpu(http.unaudited, 'postgresMs')}, audited ${cpu(http.audited, 'serverMs')} / ${cpu(http.audited, 'postgresMs')}`);
    console.log(`chain intact: ${integrity.ok} over ${integrity.checkedEvents} events`);
  } finally {
    await dataSource.destroy();
    await db.cleanup();
  }
}

void main();
