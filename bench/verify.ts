/**
 * verifyKey throughput against a bare node:http server, in one run on one machine:
 *   (a) bare node:http answering the verify JSON shape   (b) `{ __typename }` through Apollo
 *   (c) verifyKey of a valid key (the fast path)          (d) verifyKeys with 20 keys
 * ROUNDS rounds of all four (default 3); prints medians of req/s, p50, p99 and the ratios c/a, c/b, (d x 20)/a.
 * Usage: npm run bench:verify   (DATABASE_URL or embedded PostgreSQL; DURATION_S, CONNECTIONS, ROUNDS)
 */
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { generateKey } from '../src/auth/key-format';
import { createBenchDatabase } from './lib/bench-database';
import { cpuSeconds, gql, startKeyledger, startProcess, usageWritten, type Running } from './lib/processes';
import { runBench } from './lib/run';
import { percentile } from './lib/stats';

const DURATION = Number(process.env.DURATION_S ?? 10);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 50);
const ROUNDS = Number(process.env.ROUNDS ?? 3);

interface Row {
  name: string;
  rps: number;
  /** Usage records the server wrote per second during the run (every verification is one) */
  usagePerSecond?: number;
  p50: number;
  p99: number;
  errors: number;
  /** The server process's CPU time per request (user + system), µs: steadier than req/s on a shared machine */
  cpuMicros: number | null;
}


async function load(name: string, target: Running, path: string, body: string, headers: Record<string, string> = {}, countsUsage = false): Promise<Row> {
  const url = `${target.base}${path}`;
  const server = countsUsage ? target.base : null;
  // A short warm-up so JIT and caches are hot before measuring.
  await autocannon({ url, method: 'POST', connections: CONNECTIONS, duration: 2, body, headers: { 'content-type': 'application/json', ...headers } });
  const before = server ? await usageWritten(server) : 0;
  const started = Date.now();
  const cpuBefore = cpuSeconds(target.child.pid);
  const result = await autocannon({ url, method: 'POST', connections: CONNECTIONS, duration: DURATION, body, headers: { 'content-type': 'application/json', ...headers } });
  const cpuAfter = cpuSeconds(target.child.pid);
  const cpuMicros = cpuBefore === null || cpuAfter === null ? null : ((cpuAfter - cpuBefore) * 1e6) / result.requests.total;
  await new Promise((r) => setTimeout(r, 500)); // the last flush
  const usagePerSecond = server ? ((await usageWritten(server)) - before) / ((Date.now() - started) / 1000) : undefined;
  return { name, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx + result.timeouts, usagePerSecond, cpuMicros };
}

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const bare = await startProcess('dist/bench/bare-verify-server.js', {});
  const server = await startKeyledger({ DATABASE_URL: db.url, KEY_PEPPER: randomBytes(32).toString('hex'), BOOTSTRAP_ADMIN_KEY: adminKey });
  try {
    const created = async (input: Record<string, unknown>) =>
      (await gql<{ createApiKey: { secret: string } }>(server.base, adminKey,
        'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }', { input })).createApiKey.secret;
    const { roles } = await gql<{ roles: Array<{ id: string; name: string }> }>(server.base, adminKey, '{ roles { id name } }');
    const verifierKey = await created({ name: 'bench-verifier', roleIds: [roles.find((r) => r.name === 'verifier')!.id] });
    const keys = await Promise.all(Array.from({ length: 20 }, (_, i) => created({ name: `bench-${i}`, permissions: ['invoices:read'] })));
    const auth = { authorization: `Bearer ${verifierKey}` };
    const selection = '{ valid code keyId ownerId permissions remaining }';

    const runs: Array<[string, () => Promise<Row>]> = [
      ['(a) bare node:http', () => load('(a) bare node:http', bare, '/verify', JSON.stringify({ key: keys[0] }))],
      ['(b) { __typename } via Apollo', () => load('(b) { __typename } via Apollo', server, '/graphql', JSON.stringify({ query: '{ __typename }' }), auth, true)],
      ['(c) verifyKey', () => load('(c) verifyKey', server, '/graphql',
        JSON.stringify({ query: `query($k: String!) { verifyKey(input: { key: $k, permissions: ["invoices:read"] }) ${selection} }`, variables: { k: keys[0] } }), auth, true)],
      ['(d) verifyKeys x 20', () => load('(d) verifyKeys x 20', server, '/graphql',
        JSON.stringify({ query: `query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) ${selection} }`, variables: { i: keys.map((key) => ({ key })) } }), auth, true)],
    ];
    // Rounds of all four, medians: this machine's speed drifts by tens of percent between minutes.
    const samples = new Map<string, Row[]>(runs.map(([name]) => [name, []]));
    for (let round = 0; round < ROUNDS; round++) for (const [name, run] of runs) samples.get(name)!.push(await run());
    const median = (values: number[]) => percentile(values, 50);
    const rows: Row[] = runs.map(([name]) => {
      const list = samples.get(name)!;
      const usage = list.map((r) => r.usagePerSecond).filter((v): v is number => v !== undefined);
      return {
        name,
        rps: median(list.map((r) => r.rps)),
        p50: median(list.map((r) => r.p50)),
        p99: median(list.map((r) => r.p99)),
        errors: list.reduce((n, r) => n + r.errors, 0),
        usagePerSecond: usage.length > 0 ? median(usage) : undefined,
        cpuMicros: list.every((r) => r.cpuMicros !== null) ? median(list.map((r) => r.cpuMicros!)) : null,
      };
    });

    console.log(`\nverify bench: ${CONNECTIONS} connections, ${DURATION} s each, ${ROUNDS} rounds (medians), node ${process.version}\n`);
    console.log('| run | req/s | p50 ms | p99 ms | errors | usage records written/s | server CPU µs/request | req/s per round |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---|');
    for (const r of rows) {
      const perRound = samples.get(r.name)!.map((x) => x.rps.toFixed(0)).join(', ');
      console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.usagePerSecond === undefined ? '-' : r.usagePerSecond.toFixed(0)} | ${r.cpuMicros === null ? '-' : r.cpuMicros.toFixed(1)} | ${perRound} |`);
    }
    const [a, b, c, d] = rows as [Row, Row, Row, Row];
    console.log(`\nc/a = ${(c.rps / a.rps).toFixed(2)} (target >= 0.5)   c/b = ${(c.rps / b.rps).toFixed(2)}   (d x 20)/a = ${((d.rps * 20) / a.rps).toFixed(2)} (target >= 3)`);
    if (a.cpuMicros !== null && c.cpuMicros !== null) {
      console.log(`server CPU per request: bare ${a.cpuMicros.toFixed(1)} µs, verifyKey ${c.cpuMicros.toFixed(1)} µs (a/c = ${(a.cpuMicros / c.cpuMicros).toFixed(2)}); the client shares these cores`);
    }
  } finally {
    await server.stop();
    await bare.stop();
    await db.cleanup();
  }
}

runBench(main);
