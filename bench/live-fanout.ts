/**
 * What a fan-out burst to live audit tails does to everyone else's requests. TAILS tails start at
 * once against a real server process; each start is an audit.query event every registered tail
 * receives, so the burst is about TAILS² deliveries. Meanwhile a probe sends
 * `{ viewer { permissions } }` every 20 ms. Reported: the probe's p50 / p95 / max during the burst,
 * against the same probe with no tails, in the same run, and how long the deliveries took.
 * Usage: npm run bench:live-fanout   (DATABASE_URL or embedded PostgreSQL; TAILS, default 400)
 */
import { randomBytes } from 'node:crypto';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import { createBenchDatabase } from './lib/bench-database';
import { gql, startKeyledger, type Running } from './lib/processes';
import { runBench } from './lib/run';
import { percentile } from './lib/stats';

const TAILS = Number(process.env.TAILS ?? 400);
/** A connection runs at most 100 operations, and a key 300 on one instance. */
const TAILS_PER_KEY = 100;
const PROBE_EVERY_MS = 20;
const BASELINE_MS = 3000;
/** The burst is over once no delivery arrived for this long (after the first; the seal may wait up to a second). */
const QUIET_MS = 1000;
const BURST_LIMIT_MS = 60_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Probe {
  /** When it was sent, ms after the phase began */
  at: number;
  latency: number;
}

/** Probes until `until` resolves. */
async function probe(server: Running, key: string, until: Promise<unknown>): Promise<Probe[]> {
  const probes: Probe[] = [];
  const began = performance.now();
  let done = false;
  void until.then(() => (done = true));
  while (!done) {
    const started = performance.now();
    await gql(server.base, key, '{ viewer { permissions } }');
    probes.push({ at: started - began, latency: performance.now() - started });
    await sleep(PROBE_EVERY_MS);
  }
  return probes;
}

/** One auditor user and key per TAILS_PER_KEY tails: the per-user share is half the bound. */
async function auditorKeys(server: Running, adminKey: string, count: number): Promise<string[]> {
  const { roles } = await gql<{ roles: Array<{ id: string; name: string }> }>(server.base, adminKey, '{ roles { id name } }');
  const auditor = roles.find((role) => role.name === 'auditor')!.id;
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `auditor-${i}`;
    const { createUser } = await gql<{ createUser: { id: string } }>(server.base, adminKey,
      'mutation($i: CreateUserInput!) { createUser(input: $i) { id } }', { i: { name, email: `${name}@example.test`, roleIds: [auditor] } });
    const { createApiKey } = await gql<{ createApiKey: { secret: string } }>(server.base, adminKey,
      'mutation($o: ID!, $n: String!) { createApiKey(input: { ownerId: $o, name: $n, permissions: ["*"] }) { secret } }', { o: createUser.id, n: name });
    keys.push(createApiKey.secret);
  }
  return keys;
}

function connect(server: Running, key: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = createClient({
      url: server.base.replace(/^http/, 'ws') + '/graphql',
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${key}` },
      lazy: false,
      retryAttempts: 0,
      onNonLazyError: reject,
      on: { connected: () => resolve(client) },
    });
  });
}

function summary(probes: Probe[]): string {
  const samples = probes.map((p) => p.latency);
  return `${percentile(samples, 50).toFixed(1)} / ${percentile(samples, 95).toFixed(1)} / ${Math.max(...samples).toFixed(1)}`;
}

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const server = await startKeyledger({
    DATABASE_URL: db.url,
    KEY_PEPPER: randomBytes(32).toString('base64url'),
    BOOTSTRAP_ADMIN_KEY: adminKey,
    MAX_AUDIT_TAILS: String(TAILS * 2),
  });
  const clients: Client[] = [];
  try {
    const keys = await auditorKeys(server, adminKey, Math.ceil(TAILS / TAILS_PER_KEY));
    for (const key of keys) clients.push(await connect(server, key));
    const baseline = await probe(server, adminKey, sleep(BASELINE_MS));

    let deliveries = 0;
    let lastDeliveryAt: number | null = null;
    const errors: unknown[] = [];
    const burstStarted = performance.now();
    for (let i = 0; i < TAILS; i++) {
      clients[Math.floor(i / TAILS_PER_KEY)]!.subscribe(
        { query: 'subscription { auditEventRecorded { id } }' },
        {
          next: (result) => {
            if (result.errors) return void errors.push(result.errors);
            deliveries++;
            lastDeliveryAt = performance.now();
          },
          error: (error) => errors.push(error),
          complete: () => {},
        },
      );
    }
    const quiet = (async () => {
      while (performance.now() - burstStarted < BURST_LIMIT_MS && (lastDeliveryAt === null || performance.now() - lastDeliveryAt < QUIET_MS)) await sleep(50);
    })();
    const during = await probe(server, adminKey, quiet);
    if (errors.length > 0) throw new Error(`tails refused: ${JSON.stringify(errors.slice(0, 3))}`);
    if (lastDeliveryAt === null) throw new Error(`no delivery within ${BURST_LIMIT_MS} ms`);
    const burstMs = lastDeliveryAt - burstStarted;
    // Every tail receives at least the starts sealed after its own registration: half the square at the least.
    if (deliveries < (TAILS * (TAILS + 1)) / 2) throw new Error(`only ${deliveries} deliveries for ${TAILS} tails`);
    const worst = during.reduce((a, b) => (b.latency > a.latency ? b : a));

    console.log(`\nlive audit fan-out: ${TAILS} tails starting at once, probe every ${PROBE_EVERY_MS} ms (ms: p50 / p95 / max)\n`);
    console.log('| phase | probes | probe latency | deliveries | burst |');
    console.log('|---|---:|---:|---:|---:|');
    console.log(`| no tails | ${baseline.length} | ${summary(baseline)} | | |`);
    console.log(`| ${TAILS} tails starting | ${during.length} | ${summary(during)} | ${deliveries} | ${(burstMs / 1000).toFixed(1)} s |`);
    console.log(`\nthe slowest probe was sent ${worst.at.toFixed(0)} ms into the burst; the last delivery came at ${burstMs.toFixed(0)} ms`);
    console.log(`ratio to the baseline: p95 ${(percentile(during.map((p) => p.latency), 95) / percentile(baseline.map((p) => p.latency), 95)).toFixed(1)}, max ${(worst.latency / Math.max(...baseline.map((p) => p.latency))).toFixed(1)}`);
  } finally {
    for (const client of clients) await client.dispose();
    await server.stop();
    await db.cleanup();
  }
}

runBench(main);
