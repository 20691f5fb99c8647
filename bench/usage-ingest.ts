/**
 * 1. How many usage records per second the buffered writer can put into usage_events: RECORDS
 *    records for a few hundred keys are handed to UsageService as fast as the producer can, and the
 *    time until all are written is measured (the writer flushes every 200 ms and at 2,000 buffered).
 * 2. What that ingest costs verification itself: KeyVerificationService in this process verifies 20
 *    cached keys at a time (as verifyKeys does) at RATE per second (default 50,000), once with the
 *    real writer and once with usage records discarded, alternating runs of DURATION_S; the process's
 *    CPU time per verification gives the verify capacity left (ratio of the two, medians). This
 *    leaves out everything else a verification costs (HTTP, GraphQL), so it is the strict measure.
 * 3. What it costs the server's verify throughput (the measure): autocannon sends verifyKey
 *    (two usage records a request: past 50,000 records/s at the server's verifyKey rate), then
 *    verifyKeys x 20 (about 21 a request), over SERVER_KEYS distinct keys (default 1,000, so few
 *    records merge) to a real server process, and to the same server with usage recording switched
 *    off, alternating SERVER_ROUNDS runs of SERVER_DURATION_S; req/s with over req/s without (medians).
 * Usage: npm run bench:usage-ingest   (DATABASE_URL or embedded PostgreSQL; RECORDS, DURATION_S, RATE,
 *        SERVER_KEYS, SERVER_DURATION_S, SERVER_ROUNDS)
 */
import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import type { DataSource } from 'typeorm';
import { generateKey, hashKey } from '../src/auth/key-format';
import { createDataSource, migrate } from '../src/db/data-source';
import { ensureUsagePartitions } from '../src/db/partitions';
import { VerifyCode } from '../src/entities/enums';
import { KeyCache } from '../src/services/key-cache';
import { KeyVerificationService, type KeyRecord } from '../src/services/key-verification.service';
import { KeyRateLimiter } from '../src/services/rate-limiter';
import { UsageService } from '../src/services/usage.service';
import { percentile } from './lib/stats';
import { createBenchDatabase, type BenchDatabase } from './lib/bench-database';
import { gql, startKeyledger, startProcess, usageWritten, withServer, type Running } from './lib/processes';
import { runBench } from './lib/run';

const RECORDS = Number(process.env.RECORDS ?? 1_000_000);

const DURATION_MS = Number(process.env.DURATION_S ?? 5) * 1000;
const RATE = Number(process.env.RATE ?? 50_000);
const SERVER_KEYS = Number(process.env.SERVER_KEYS ?? 1000);
const SERVER_DURATION_S = Number(process.env.SERVER_DURATION_S ?? 10);
const SERVER_ROUNDS = Number(process.env.SERVER_ROUNDS ?? 3);
const CONNECTIONS = 50;

/** Usage recording switched off: the baseline for what ingest costs verification. */
class DiscardingUsage extends UsageService {
  override record(): void {}
}

async function verifyWithAndWithoutIngest(dataSource: DataSource, ownerId: string): Promise<void> {
  const pepper = randomBytes(32).toString('hex');
  const secrets = Array.from({ length: 20 }, () => generateKey('kl'));
  for (const [i, secret] of secrets.entries()) {
    await dataSource.query(
      `INSERT INTO api_keys (hash, prefix, start, name, owner_id, granted_permissions) VALUES ($1, 'kl', $2, $3, $4, '{invoices:read}')`,
      [hashKey(pepper, secret), secret.slice(0, 7), `ingest-${i}`, ownerId],
    );
  }
  /** Verifies at RATE per second (20 at a time) for DURATION_S; the process's CPU time per verification. */
  const run = async (usage: UsageService): Promise<{ cpuMicros: number; perSecond: number; written: number }> => {
    const cache = new KeyCache<KeyRecord>({ maxEntries: 1000 });
    cache.goLive();
    const verification = new KeyVerificationService(dataSource, pepper, new KeyRateLimiter(null), usage, cache);
    const writtenBefore = usage.written;
    let verified = 0;
    const started = performance.now();
    const cpu = process.cpuUsage();
    while (performance.now() - started < DURATION_MS) {
      if (verified > (RATE * (performance.now() - started)) / 1000) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        continue;
      }
      const outcomes = await Promise.all(secrets.map((secret) => verification.verify(secret, { ip: '10.0.0.1' })));
      if (outcomes[0]!.code !== VerifyCode.VALID) throw new Error(`unexpected ${outcomes[0]!.code}`);
      verified += outcomes.length;
    }
    const seconds = (performance.now() - started) / 1000;
    await usage.flush();
    const used = process.cpuUsage(cpu);
    return { cpuMicros: (used.user + used.system) / verified, perSecond: verified / seconds, written: (usage.written - writtenBefore) / seconds };
  };
  const writer = new UsageService(dataSource, (error) => console.error(error));
  const discarding = new DiscardingUsage(dataSource, (error) => console.error(error));
  await run(writer); // warm-up
  const without: Array<{ cpuMicros: number; perSecond: number }> = [];
  const withIngest: Array<{ cpuMicros: number; perSecond: number; written: number }> = [];
  for (let round = 0; round < 3; round++) {
    without.push(await run(discarding));
    withIngest.push(await run(writer));
  }
  await writer.close();
  await discarding.close();
  const median = (values: number[]) => percentile(values, 50);
  const a = median(without.map((r) => r.cpuMicros));
  const b = median(withIngest.map((r) => r.cpuMicros));
  console.log(`\nverification at ${RATE}/s in process (20 cached keys, as verifyKeys): achieved ${median(withIngest.map((r) => r.perSecond)).toFixed(0)}/s with usage written, ${median(without.map((r) => r.perSecond)).toFixed(0)}/s discarded`);
  console.log(`usage written meanwhile: ${median(withIngest.map((r) => r.written)).toFixed(0)} records/s`);
  console.log(`CPU per verification: ${a.toFixed(2)} us with usage discarded, ${b.toFixed(2)} us with it written: verify capacity ratio ${(a / b).toFixed(2)} (target >= 0.9)`);
}

/** Part 3: verifyKey, then verifyKeys x 20, against the real server, with usage written and with it discarded. */
async function serverWithAndWithoutIngest(db: BenchDatabase, dataSource: DataSource, ownerId: string): Promise<void> {
  const pepper = randomBytes(32).toString('hex');
  const verifier = generateKey('kl');
  const secrets = Array.from({ length: SERVER_KEYS }, () => generateKey('kl'));
  // The calling service: a key with keys:verify whose owner holds the verifier role.
  const [{ id: serviceOwner }] = (await dataSource.query(
    `INSERT INTO users (kind, name, email, status) VALUES ('HUMAN', 'ingest-verifier', 'verifier@example.com', 'ACTIVE') RETURNING id`,
  )) as Array<{ id: string }>;
  await dataSource.query(`INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles WHERE name = 'verifier'`, [serviceOwner]);
  await dataSource.query(
    `INSERT INTO api_keys (hash, prefix, start, name, owner_id, granted_permissions)
     SELECT decode(h, 'hex'), 'kl', s, 'server-ingest', o, p::text[] FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[]) AS t(h, s, o, p)`,
    [
      [verifier, ...secrets].map((secret) => hashKey(pepper, secret).toString('hex')),
      [verifier, ...secrets].map((secret) => secret.slice(0, 7)),
      [serviceOwner, ...secrets.map(() => ownerId)],
      ['{keys:verify}', ...secrets.map(() => '{invoices:read}')],
    ],
  );
  const env = { DATABASE_URL: db.url, KEY_PEPPER: pepper };
  const selection = '{ valid code keyId ownerId permissions remaining }';
  const shapes: Array<{ name: string; query: string; perRequest: number; variables: (keys: string[]) => Record<string, unknown> }> = [
    // The issue's own scale: verifyKey records two usage records a request (the caller's key and the
    // verified one), so the server's verifyKey rate alone is ingest past 50,000 records/s.
    { name: 'verifyKey', perRequest: 1, query: `query($k: String!) { verifyKey(input: { key: $k }) ${selection} }`, variables: ([key]) => ({ k: key }) },
    // Past it: 20 verifications a request, about 21 records each.
    { name: 'verifyKeys x 20', perRequest: 20, query: `query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) ${selection} }`, variables: (keys) => ({ i: keys.map((key) => ({ key })) }) },
  ];
  const load = async (server: Running, shape: (typeof shapes)[number], seconds: number): Promise<{ rps: number; written: number }> => {
    // Each request verifies the next keys in turn, so every key is verified as often and few records merge.
    const requests = Array.from({ length: Math.ceil(SERVER_KEYS / shape.perRequest) }, (_, i) => ({
      body: JSON.stringify({ query: shape.query, variables: shape.variables(secrets.slice(i * shape.perRequest, (i + 1) * shape.perRequest)) }),
    }));
    const check = await gql<Record<string, { valid: boolean } | Array<{ valid: boolean }>>>(server.base, verifier, shape.query, shape.variables([secrets[0]!]));
    if (![Object.values(check)[0]].flat().every((r) => r?.valid)) throw new Error('the bench key does not verify');
    const options = {
      url: `${server.base}/graphql`, method: 'POST' as const, connections: CONNECTIONS, requests,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${verifier}` },
    };
    await autocannon({ ...options, duration: 2 }); // warm-up: JIT, every key cached
    const before = await usageWritten(server.base);
    const started = Date.now();
    const result = await autocannon({ ...options, duration: seconds });
    await new Promise((resolve) => setTimeout(resolve, 500)); // the last flush
    const written = ((await usageWritten(server.base)) - before) / ((Date.now() - started) / 1000);
    if (result.errors + result.non2xx + result.timeouts > 0) throw new Error(`${result.errors + result.non2xx + result.timeouts} failed requests`);
    return { rps: result.requests.average, written };
  };
  for (const shape of shapes) {
    const once = (start: () => Promise<Running>) => withServer(start, (server) => load(server, shape, SERVER_DURATION_S));
    const writing: Array<{ rps: number; written: number }> = [];
    const discarding: Array<{ rps: number; written: number }> = [];
    for (let round = 0; round < SERVER_ROUNDS; round++) {
      discarding.push(await once(() => startProcess('dist/bench/lib/server-discarding-usage.js', env)));
      writing.push(await once(() => startKeyledger(env)));
    }
    const median = (values: number[]) => percentile(values, 50);
    const withRps = median(writing.map((r) => r.rps));
    const withoutRps = median(discarding.map((r) => r.rps));
    const list = (runs: Array<{ rps: number }>) => runs.map((r) => r.rps.toFixed(0)).join(', ');
    console.log(`\nthrough the server: ${shape.name} over ${SERVER_KEYS} keys, ${CONNECTIONS} connections, ${SERVER_ROUNDS} rounds of ${SERVER_DURATION_S} s`);
    console.log(`usage written:   ${list(writing)} req/s (median ${withRps.toFixed(0)} = ${(withRps * shape.perRequest).toFixed(0)} verifications/s; ${median(writing.map((r) => r.written)).toFixed(0)} usage records written/s)`);
    console.log(`usage discarded: ${list(discarding)} req/s (median ${withoutRps.toFixed(0)}; ${median(discarding.map((r) => r.written)).toFixed(0)} records written/s)`);
    console.log(`verify throughput ratio with/without ingest: ${(withRps / withoutRps).toFixed(2)} (target >= 0.9 at >= 50,000 records/s)`);
  }
}

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  await dataSource.initialize();
  try {
    await migrate(dataSource);
    await ensureUsagePartitions(dataSource);
    const [{ id: ownerId }] = (await dataSource.query(
      `INSERT INTO users (kind, name, email, status) VALUES ('HUMAN', 'bench', 'bench@example.com', 'ACTIVE') RETURNING id`,
    )) as Array<{ id: string }>;
    const keyIds = (await dataSource.query(
      `INSERT INTO api_keys (hash, prefix, start, name, owner_id)
       SELECT decode(md5(g::text) || md5(g::text), 'hex'), 'kl', 'kl_bench', 'bench', $1 FROM generate_series(1, 300) g RETURNING id`,
      [ownerId!],
    )) as Array<{ id: string }>;
    const usage = new UsageService(dataSource, (error) => console.error(error));
    const started = performance.now();
    for (let i = 0; i < RECORDS; i++) {
      usage.record({
        occurredAt: Date.now(),
        keyId: keyIds[i % keyIds.length]!.id,
        ownerId,
        code: i % 50 === 0 ? VerifyCode.INSUFFICIENT_PERMISSIONS : VerifyCode.VALID,
        ip: `10.0.${i % 200}.${i % 250}`,
        resource: i % 3 === 0 ? `invoices/${randomUUID()}` : null,
      });
      // As verifications do: wait when the writer signals it is behind; yield now and then.
      if (usage.saturated) await usage.drained();
      else if (i % 2000 === 1999) await new Promise((resolve) => setImmediate(resolve));
    }
    await usage.close();
    const seconds = (performance.now() - started) / 1000;
    const [{ count }] = (await dataSource.query('SELECT coalesce(sum(occurrences), 0)::int AS count FROM usage_events')) as Array<{ count: number }>;
    console.log(`\nusage ingest: ${RECORDS} records in ${seconds.toFixed(1)} s = ${(RECORDS / seconds).toFixed(0)} records/s (target >= 50,000)`);
    console.log(`written ${count}, dropped ${usage.dropped} (producers wait past 50,000 buffered; drops only past 200,000)`);
    await verifyWithAndWithoutIngest(dataSource, ownerId!);
    await serverWithAndWithoutIngest(db, dataSource, ownerId!);
  } finally {
    await dataSource.destroy();
    await db.cleanup();
  }
}

runBench(main);
