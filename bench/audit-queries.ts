/**
 * Auditor queries on a large audit log: seeds EVENTS synthetic events (default 10 million) with one
 * server-side INSERT … SELECT, then measures p50/p95 of six representative queries through GraphQL
 * (a real server over HTTP), through the equivalent hand-written SQL, and through that SQL with its
 * audit event written in the same statement (what every auditor query must also do), in one run.
 * Usage: npm run bench:audit-queries   (EVENTS=2000000 for a quicker run; DATABASE_URL optional)
 * KEEP_DATABASE=1 leaves the seeded database and prints its URL; SEEDED_DATABASE_URL=<it> measures
 * again on it without seeding (seeding 10 million events takes about ten minutes here).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import { Client } from 'pg';
import { createDataSource } from '../src/db/data-source';
import { AuditService } from '../src/services/audit.service';
import { KeyService } from '../src/services/key.service';
import { cpuSeconds, startKeyledger } from './lib/processes';
import { generateKey } from '../src/auth/key-format';
import { ceilDay, ceilHour, floorDay, floorHour, rollupBackfill } from '../src/services/audit-rollup';
import { createBenchDatabase } from './lib/bench-database';
import { percentile } from './lib/stats';
import { SYSTEM_ACTOR } from '../src/services/actor';

const EVENTS = Number(process.env.EVENTS ?? 10_000_000);
/** Sequential runs of each query on each side: a p95 of 40 would be the second-slowest run */
const RUNS = Number(process.env.RUNS ?? 200);
const DAY = 86_400_000;
/** A kept database must start again with the pepper it was made with; a bench's keys guard nothing. */
const KEPT_DATABASE_PEPPER = '9f1c4e7a2b8d6035e1f7a9c3b5d80e624a1f3c7b9d2e5068f4a7c1b3d9e2f605';

interface Timing {
  p50: number;
  p95: number;
}

async function elapsedMs(run: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await run();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/**
 * The SQL form of a query, the same SQL recording its audit event as the API must (one statement,
 * committed), and the GraphQL form, alternating run by run: whatever else the machine is doing then
 * (a seal pass, a usage flush, another process) falls on every side alike.
 * Also the server process's CPU time per GraphQL request.
 */
async function timeSides(
  direct: () => Promise<unknown>,
  audited: () => Promise<unknown>,
  viaGraphQL: () => Promise<unknown>,
  serverPid: number | undefined,
): Promise<{ sql: Timing; auditedSql: Timing; graphql: Timing; serverCpuMs: number | null }> {
  await direct(); // warm-up
  await audited();
  await viaGraphQL();
  const sqlSamples: number[] = [];
  const auditedSamples: number[] = [];
  const graphqlSamples: number[] = [];
  let serverCpu = 0;
  for (let i = 0; i < RUNS; i++) {
    sqlSamples.push(await elapsedMs(direct));
    auditedSamples.push(await elapsedMs(audited));
    const cpuBefore = cpuSeconds(serverPid);
    graphqlSamples.push(await elapsedMs(viaGraphQL));
    const cpuAfter = cpuSeconds(serverPid);
    serverCpu += cpuBefore === null || cpuAfter === null ? NaN : cpuAfter - cpuBefore;
  }
  const timing = (samples: number[]) => ({ p50: percentile(samples, 50), p95: percentile(samples, 95) });
  return { sql: timing(sqlSamples), auditedSql: timing(auditedSamples), graphql: timing(graphqlSamples), serverCpuMs: Number.isNaN(serverCpu) ? null : (serverCpu * 1000) / RUNS };
}

/**
 * `read` as an auditor's query must run: with its audit.query event staged in the same statement
 * and committed before the rows are used (what AuditService.auditedRead sends, less its check for
 * events committed but not yet sealed). The server seals these events like its own.
 */
function withAuditEvent(read: string, params: unknown[], actorId: string, name: string): { sql: string; params: unknown[] } {
  const n = params.length;
  return {
    sql: `WITH audit_event AS (
            INSERT INTO audit_staging (occurred_at, action, outcome, actor_type, actor_id, target_type, ip, user_agent, request_id, details)
            VALUES (now(), 'audit.query', 'SUCCESS', 'USER', $${n + 1}, 'audit', '127.0.0.1', 'bench', gen_random_uuid()::text, $${n + 2}::jsonb) RETURNING 1)
          ${read}`,
    params: [...params, actorId, JSON.stringify({ query: 'auditEvents', bench: name })],
  };
}

async function seed(sql: Client): Promise<void> {
  const started = Date.now();
  const base = Number((await sql.query(`SELECT coalesce(max(id), 0) AS max FROM audit_events`)).rows[0].max);
  // A year of history needs its monthly partitions, as an import of old events would.
  await sql.query(`SELECT keyledger_audit_partitions(now() - interval '366 days', now() + interval '1 month')`);
  // 10k actors, 40 actions in 4 families, targets, addresses in 10.0.0.0/12, a year of history.
  await sql.query(`
    INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type,
                              target_id, ip, user_agent, request_id, details, prev_hash, hash)
    SELECT $2::bigint + n,
           now() - (n::double precision / $1) * interval '365 days',
           (ARRAY['key','user','role','auth'])[1 + n % 4] || '.' || (ARRAY['create','update','revoke','disable','enable','assign','failure','delete','rotate','query'])[1 + (n / 4) % 10],
           CASE WHEN n % 50 = 0 THEN 'DENIED' ELSE 'SUCCESS' END,
           'USER',
           md5('actor' || (n % 10000))::uuid,
           md5('key' || (n % 30000))::uuid,
           (ARRAY['api_key','user','role'])[1 + n % 3],
           'target-' || (n % 200000),
           '10.' || (n % 16) || '.' || ((n / 16) % 256) || '.' || ((n / 4096) % 256),
           'bench', md5(n::text),
           jsonb_build_object('reason', (ARRAY['rotation','compromised','offboarding','cleanup'])[1 + n % 4], 'n', n % 1000),
           repeat('0', 64), md5(n::text) || md5(n::text)
      FROM generate_series(1, $1) n`, [EVENTS, base]);
  await sql.query(`SELECT setval('audit_events_id_seq', $1)`, [base + EVENTS]);
  // The sealer keeps the hourly rollup for events it appends; these were inserted behind its back.
  await sql.query(rollupBackfill(base));
  await sql.query('ANALYZE audit_events');
  console.log(`seeded ${EVENTS} events in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

/** A key with every permission for the admin of a database that already has one. */
async function freshAdminKey(url: string, pepper: string): Promise<string> {
  const dataSource = createDataSource(url, { onQuery: () => {}, onError: () => {} });
  await dataSource.initialize();
  try {
    const [{ id }] = (await dataSource.query(`SELECT id FROM users WHERE name = 'admin' ORDER BY created_at LIMIT 1`)) as Array<{ id: string }>;
    const keys = new KeyService(new AuditService(dataSource), pepper, 'kl');
    return (await keys.create(SYSTEM_ACTOR, { ownerId: id!, name: `bench ${Date.now()}`, permissions: ['*'] })).secret;
  } finally {
    await dataSource.destroy();
  }
}

/** POSTs over one kept-alive connection, as an auditor's tool would; throws on GraphQL errors. */
function graphqlClient(base: string, key: string): (query: string, variables: Record<string, unknown>) => Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const { hostname, port } = new URL(base);
  return (query, variables) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ query, variables });
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'content-length': Buffer.byteLength(body) };
      const req = request({ agent, hostname, port, path: '/graphql', method: 'POST', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const answer = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { errors?: unknown };
          if (answer.errors) reject(new Error(JSON.stringify(answer.errors)));
          else resolve();
        });
      });
      req.on('error', reject);
      req.end(body);
    });
}

async function main(): Promise<void> {
  const seeded = process.env.SEEDED_DATABASE_URL;
  const keep = Boolean(process.env.KEEP_DATABASE);
  const db = seeded ? { url: seeded, cleanup: async () => {} } : await createBenchDatabase();
  const pepper = seeded || keep ? KEPT_DATABASE_PEPPER : randomBytes(32).toString('hex');
  const bootstrapKey = generateKey('kl');
  // The server in its own process, as deployed: the client's work does not share its event loop.
  const server = await startKeyledger({ DATABASE_URL: db.url, KEY_PEPPER: pepper, BOOTSTRAP_ADMIN_KEY: bootstrapKey, DATABASE_POOL_SIZE: '20' });
  // A reused database has its admin already: the run gets a fresh key of its own.
  const adminKey = seeded ? await freshAdminKey(db.url, pepper) : bootstrapKey;
  const graphql = graphqlClient(server.base, adminKey);
  const sql = new Client({ connectionString: db.url });
  await sql.connect();
  try {
    if (!seeded) await seed(sql);
    if (keep) console.log(`seeded database kept: ${db.url}`);
    const now = Date.now();
    const actor = (await sql.query(`SELECT md5('actor42')::uuid AS id`)).rows[0].id as string;
    const month = { from: new Date(now - 30 * DAY).toISOString(), to: new Date(now).toISOString() };
    const day = { from: new Date(now - 100 * DAY).toISOString(), to: new Date(now - 99 * DAY).toISOString() };
    const week = { from: new Date(now - 14 * DAY).toISOString(), to: new Date(now - 7 * DAY).toISOString() };
    const page = 'pageInfo { hasNextPage endCursor } nodes { id occurredAt action actorType targetId ip details hash }';
    const cases: Array<{ name: string; graphql: string; variables: Record<string, unknown>; sql: string; params: unknown[] }> = [
      {
        name: 'by actor over a month',
        graphql: `query($f: AuditEventFilter) { auditEvents(filter: $f, first: 50) { ${page} } }`,
        variables: { f: { actorId: actor, ...month } },
        sql: `SELECT * FROM audit_events WHERE actor_id = $1 AND occurred_at >= $2 AND occurred_at < $3 ORDER BY id DESC LIMIT 51`,
        params: [actor, month.from, month.to],
      },
      {
        name: 'action prefix over a day',
        graphql: `query($f: AuditEventFilter) { auditEvents(filter: $f, first: 50) { ${page} } }`,
        variables: { f: { actions: ['key.*'], ...day } },
        sql: `SELECT * FROM audit_events WHERE action LIKE 'key.%' AND occurred_at >= $1 AND occurred_at < $2 ORDER BY id DESC LIMIT 51`,
        params: [day.from, day.to],
      },
      {
        name: 'target history',
        graphql: `query($f: AuditEventFilter) { auditEvents(filter: $f, first: 50) { ${page} } }`,
        variables: { f: { targetType: 'api_key', targetId: 'target-4242' } },
        sql: `SELECT * FROM audit_events WHERE target_type = 'api_key' AND target_id = 'target-4242' ORDER BY id DESC LIMIT 51`,
        params: [],
      },
      {
        name: 'CIDR over a week',
        graphql: `query($f: AuditEventFilter) { auditEvents(filter: $f, first: 50) { ${page} } }`,
        variables: { f: { ip: '10.3.7.0/24', ...week } },
        sql: `SELECT * FROM audit_events WHERE ip::inet <<= '10.3.7.0/24' AND occurred_at >= $1 AND occurred_at < $2 ORDER BY id DESC LIMIT 51`,
        params: [week.from, week.to],
      },
      {
        name: 'detailsContains',
        graphql: `query($f: AuditEventFilter) { auditEvents(filter: $f, first: 50) { ${page} } }`,
        variables: { f: { detailsContains: { reason: 'compromised', n: 7 } } },
        sql: `SELECT * FROM audit_events WHERE details @> '{"reason":"compromised","n":7}' ORDER BY id DESC LIMIT 51`,
        params: [],
      },
      {
        name: 'counts by action over a month',
        graphql: `query($f: AuditEventFilter) { auditCounts(filter: $f, groupBy: ACTION, limit: 20) { key count } }`,
        variables: { f: month },
        // The hand-written equivalent on this schema: whole days, then whole hours from the rollups, partial hours from the events.
        sql: `SELECT key, sum(n) AS count FROM (
                SELECT action AS key, sum(count) AS n FROM audit_counts_daily WHERE day >= $4 AND day < $5 GROUP BY 1
                UNION ALL SELECT action, sum(count) FROM audit_counts_hourly WHERE hour >= $3 AND hour < $4 GROUP BY 1
                UNION ALL SELECT action, sum(count) FROM audit_counts_hourly WHERE hour >= $5 AND hour < $6 GROUP BY 1
                UNION ALL SELECT action, count(*) FROM audit_events WHERE occurred_at >= $1 AND occurred_at < $3 GROUP BY 1
                UNION ALL SELECT action, count(*) FROM audit_events WHERE occurred_at >= $6 AND occurred_at < $2 GROUP BY 1
              ) parts GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20`,
        params: (({ from, to }) => [from, to, ceilHour(from), ceilDay(from), floorDay(to), floorHour(to)].map((d) => d.toISOString()))({ from: new Date(month.from), to: new Date(month.to) }),
      },
    ];
    // A reused database holds what it was seeded with, whatever EVENTS says now.
    const events = seeded ? Number((await sql.query(`SELECT count(*) AS n FROM audit_events`)).rows[0].n) : EVENTS;
    console.log(`events=${events} runs=${RUNS} machine: 2 cores; p50/p95 in ms`);
    const adminId = (await sql.query(`SELECT id FROM users WHERE name = 'admin' ORDER BY created_at LIMIT 1`)).rows[0].id as string;
    console.log('query                          | SQL p50 / p95 | audited SQL p50 / p95 | GraphQL p50 / p95 | p95 ratio | p95 ratio to audited SQL | server CPU ms/request');
    const pair = (t: Timing, width: number) => `${t.p50.toFixed(1)} / ${t.p95.toFixed(1)}`.padStart(width);
    for (const c of cases) {
      const audited = withAuditEvent(c.sql, c.params, adminId, c.name);
      const { sql: direct, auditedSql, graphql: viaGraphQL, serverCpuMs } = await timeSides(
        () => sql.query(c.sql, c.params),
        () => sql.query(audited.sql, audited.params),
        () => graphql(c.graphql, c.variables),
        server.child.pid,
      );
      console.log(
        `${c.name.padEnd(30)} | ${pair(direct, 13)} | ${pair(auditedSql, 21)} | ${pair(viaGraphQL, 17)} | ${(viaGraphQL.p95 / direct.p95).toFixed(2).padStart(9)} | ` +
          `${(viaGraphQL.p95 / auditedSql.p95).toFixed(2).padStart(24)} | ${serverCpuMs === null ? 'n/a' : serverCpuMs.toFixed(2)}`,
      );
    }
    const scan: number[] = [];
    for (let i = 0; i < Math.min(RUNS, 20); i++) {
      scan.push(await elapsedMs(() =>
        sql.query(`SELECT action, count(*) FROM audit_events WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1 ORDER BY 2 DESC LIMIT 20`, [month.from, month.to])));
    }
    console.log(`(the same counts by scanning a month of events, SQL: p50 ${percentile(scan, 50).toFixed(1)}, p95 ${percentile(scan, 95).toFixed(1)})`);
  } finally {
    await sql.end();
    await server.stop();
    if (!keep) await db.cleanup();
  }
}

void main();
