/**
 * Revocation delay across instances: two servers on one database; revoke a key on A while B is
 * polled with verifyKey; the delay is from A's mutation response (the commit has happened) to
 * B's first REVOKED. 200 trials, without and then with Redis (when reachable).
 * Usage: npm run bench:revocation   (DATABASE_URL or embedded PostgreSQL; REDIS_URL; TRIALS)
 */
import { randomBytes } from 'node:crypto';
import { createConnection } from 'node:net';
import { generateKey } from '../src/auth/key-format';
import { createBenchDatabase } from './lib/bench-database';
import { gql, startKeyledger, type Running } from './lib/processes';
import { percentile } from './lib/stats';
import { runBench } from './lib/run';

const TRIALS = Number(process.env.TRIALS ?? 200);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function reachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port || 6379) });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

interface Delays {
  /** A's mutation response (the commit is behind us) -> B's first REVOKED; 0 when B was first */
  afterResponse: number[];
  /** The mutation request sent -> B's first REVOKED: an upper bound that includes the mutation */
  afterRequest: number[];
}

async function trials(a: Running, b: Running, adminKey: string, verifierKey: string): Promise<Delays> {
  const delays: Delays = { afterResponse: [], afterRequest: [] };
  const verifyOnB = async (key: string) =>
    (await gql<{ verifyKey: { code: string } }>(b.base, verifierKey, 'query($k: String!) { verifyKey(input: { key: $k }) { code } }', { k: key })).verifyKey.code;
  for (let i = 0; i < TRIALS; i++) {
    const { createApiKey } = await gql<{ createApiKey: { secret: string; apiKey: { id: string } } }>(a.base, adminKey,
      'mutation($n: String!) { createApiKey(input: { name: $n }) { secret apiKey { id } } }', { n: `trial-${i}` });
    // Warm B's cache so the revocation has something to invalidate.
    for (let w = 0; w < 3; w++) if ((await verifyOnB(createApiKey.secret)) !== 'VALID') throw new Error('warm-up failed');
    let stop = false;
    let firstRevokedAt = 0;
    const poller = (async () => {
      while (!stop) {
        if ((await verifyOnB(createApiKey.secret)) === 'REVOKED') {
          firstRevokedAt = performance.now();
          return;
        }
      }
    })();
    const sentAt = performance.now();
    try {
      await gql(a.base, adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "bench") { id } }', { id: createApiKey.apiKey.id });
    } catch (error) {
      stop = true;
      await poller.catch(() => undefined);
      throw error;
    }
    const committedAt = performance.now();
    const timeout = setTimeout(() => (stop = true), 5000);
    await poller;
    clearTimeout(timeout);
    if (!firstRevokedAt) throw new Error(`trial ${i}: B never answered REVOKED`);
    delays.afterResponse.push(Math.max(0, firstRevokedAt - committedAt));
    delays.afterRequest.push(firstRevokedAt - sentAt);
  }
  return delays;
}

async function run(label: string, env: Record<string, string>): Promise<void> {
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const shared = { DATABASE_URL: db.url, KEY_PEPPER: randomBytes(32).toString('hex'), BOOTSTRAP_ADMIN_KEY: adminKey, ...env };
  const a = await startKeyledger(shared);
  const b = await startKeyledger(shared);
  try {
    const { roles } = await gql<{ roles: Array<{ id: string; name: string }> }>(a.base, adminKey, '{ roles { id name } }');
    const verifierKey = (await gql<{ createApiKey: { secret: string } }>(a.base, adminKey,
      'mutation($r: [ID!]) { createApiKey(input: { name: "verifier", roleIds: $r }) { secret } }',
      { r: [roles.find((r) => r.name === 'verifier')!.id] })).createApiKey.secret;
    const delays = await trials(a, b, adminKey, verifierKey);
    const cells = (samples: number[]) => [50, 99].map((p) => percentile(samples, p).toFixed(1)).concat(Math.max(...samples).toFixed(1)).join(' | ');
    console.log(`| ${label} | ${TRIALS} | ${cells(delays.afterResponse)} | ${cells(delays.afterRequest)} |`);
  } finally {
    await a.stop();
    await b.stop();
    await db.cleanup();
  }
}

async function main(): Promise<void> {
  console.log('\nrevocation delay to REVOKED on B (ms); target p99 <= 25 from the commit\n');
  console.log('| mode | trials | from A\'s response p50 | p99 | max | from the request p50 | p99 | max |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  await run('PostgreSQL LISTEN/NOTIFY', {});
  if (await reachable(REDIS_URL)) await run('with REDIS_URL (invalidation still NOTIFY)', { REDIS_URL });
  else console.log(`| with REDIS_URL | skipped: ${REDIS_URL} not reachable |`);
}

runBench(main);
