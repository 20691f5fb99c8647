/**
 * Alert delivery: 1,000 WebSocket subscribers to alertRaised; for each trial a revoked key is
 * presented (verifyKey) and the time from that request to the alert's arrival is taken at every
 * subscriber. Then detection time per alert type: from the request that completes the triggering
 * condition to the alert's arrival at one subscriber.
 * Usage: npm run bench:alerts   (DATABASE_URL or embedded PostgreSQL; SUBSCRIBERS, TRIALS)
 */
import { randomBytes } from 'node:crypto';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import { createBenchDatabase } from './lib/bench-database';
import { gql, startKeyledger, type Running } from './lib/processes';
import { percentile } from './lib/stats';
import { runBench } from './lib/run';

const SUBSCRIBERS = Number(process.env.SUBSCRIBERS ?? 1000);
const TRIALS = Number(process.env.TRIALS ?? 30);

interface Arrival {
  type: string;
  keyId: string | null;
  at: number;
}

function subscribe(base: string, key: string, onAlert: (alert: Arrival) => void): Promise<Client> {
  const client = createClient({
    url: base.replace('http', 'ws') + '/graphql',
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${key}` },
    lazy: false,
    retryAttempts: 0,
  });
  return new Promise((resolve, reject) => {
    client.on('connected', () => resolve(client));
    client.on('error', reject);
    client.subscribe<{ alertRaised: { type: string; key: { id: string } | null } }>(
      { query: 'subscription { alertRaised { type key { id } } }' },
      {
        next: (message) => {
          const alert = message.data?.alertRaised;
          if (alert) onAlert({ type: alert.type, keyId: alert.key?.id ?? null, at: performance.now() });
        },
        error: reject,
        complete: () => undefined,
      },
    );
  });
}

class Admin {
  constructor(
    readonly base: string,
    readonly key: string,
  ) {}

  async key_(input: Record<string, unknown>): Promise<{ id: string; secret: string }> {
    const data = await gql<{ createApiKey: { secret: string; apiKey: { id: string } } }>(this.base, this.key,
      'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }', { input });
    return { id: data.createApiKey.apiKey.id, secret: data.createApiKey.secret };
  }

  verify(secret: string, extra: Record<string, unknown> = {}): Promise<unknown> {
    return gql(this.base, this.key, 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } }', { input: { key: secret, ...extra } });
  }

  revoke(id: string): Promise<unknown> {
    return gql(this.base, this.key, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "bench") { id } }', { id });
  }
}

/** Waits for the first arrival matching `match` after `since`. */
function arrival(arrivals: Arrival[], match: (a: Arrival) => boolean, timeoutMs = 10_000): Promise<Arrival> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = () => {
      const found = arrivals.find(match);
      if (found) return resolve(found);
      if (performance.now() > deadline) return reject(new Error('alert did not arrive'));
      setTimeout(poll, 2);
    };
    poll();
  });
}

async function fanOut(server: Running, admin: Admin): Promise<void> {
  const perTrial = new Map<string, number[]>();
  const clients: Client[] = [];
  for (let i = 0; i < SUBSCRIBERS; i += 50) {
    clients.push(...(await Promise.all(Array.from({ length: Math.min(50, SUBSCRIBERS - i) }, () =>
      subscribe(server.base, admin.key, (alert) => alert.keyId && perTrial.get(alert.keyId)?.push(alert.at))))));
  }
  await new Promise((r) => setTimeout(r, 500));
  const latencies: number[] = [];
  const lastArrivals: number[] = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const key = await admin.key_({ name: `fanout-${trial}` });
    await admin.revoke(key.id);
    const arrivals: number[] = [];
    perTrial.set(key.id, arrivals);
    const sent = performance.now();
    await admin.verify(key.secret);
    const deadline = Date.now() + 10_000;
    while (arrivals.length < SUBSCRIBERS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    if (arrivals.length < SUBSCRIBERS) throw new Error(`trial ${trial}: ${arrivals.length}/${SUBSCRIBERS} subscribers got the alert`);
    latencies.push(...arrivals.map((at) => at - sent));
    lastArrivals.push(Math.max(...arrivals) - sent);
  }
  await Promise.all(clients.map((c) => c.dispose()));
  console.log(`\nalert delivery to ${SUBSCRIBERS} subscribers, ${TRIALS} trials (ms from the verifyKey request)\n`);
  console.log('| | p50 | p99 | max |');
  console.log('|---|---:|---:|---:|');
  const row = (label: string, xs: number[]) =>
    console.log(`| ${label} | ${percentile(xs, 50).toFixed(1)} | ${percentile(xs, 99).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`);
  row('every delivery', latencies);
  row('last subscriber per trial', lastArrivals);
}

type Trigger = (admin: Admin, member: string) => Promise<{ keyId: string | null; at: number }>;

/** Each completes its type's condition; `at` is when the completing request was sent. */
const TRIGGERS: Record<string, Trigger> = {
  VERIFY_FAILURE_BURST: async (admin) => {
    const ip = `198.51.100.${Math.floor(Math.random() * 250)}`;
    for (let i = 0; i < 19; i++) await admin.verify(generateKey('kl'), { ip });
    const at = performance.now();
    await admin.verify(generateKey('kl'), { ip });
    return { keyId: null, at };
  },
  REVOKED_KEY_USED: async (admin) => {
    const key = await admin.key_({ name: 'revoked' });
    await admin.revoke(key.id);
    const at = performance.now();
    await admin.verify(key.secret);
    return { keyId: key.id, at };
  },
  EXPIRED_KEY_USED: async (admin) => {
    const key = await admin.key_({ name: 'expiring', expiresAt: new Date(Date.now() + 1500).toISOString() });
    await new Promise((r) => setTimeout(r, 1600));
    const at = performance.now();
    await admin.verify(key.secret);
    return { keyId: key.id, at };
  },
  RATE_LIMITED: async (admin) => {
    const key = await admin.key_({ name: 'limited', rateLimit: { limit: 2, windowSeconds: 60 } });
    await admin.verify(key.secret);
    await admin.verify(key.secret);
    const at = performance.now();
    await admin.verify(key.secret);
    return { keyId: key.id, at };
  },
  QUOTA_LOW: async (admin) => {
    const key = await admin.key_({ name: 'quota', remaining: 12 });
    await admin.verify(key.secret);
    const at = performance.now();
    await admin.verify(key.secret);
    return { keyId: key.id, at };
  },
  USAGE_SPIKE: async (admin) => {
    // Server runs with 1 s buckets, 3 buckets of history: a steady 5/s, then a burst.
    const key = await admin.key_({ name: 'spiky' });
    for (let s = 0; s < 5; s++) {
      for (let i = 0; i < 5; i++) await admin.verify(key.secret);
      await new Promise((r) => setTimeout(r, 1000 - ((Date.now() % 1000) - 5)));
    }
    const at = performance.now();
    await Promise.all(Array.from({ length: 80 }, () => admin.verify(key.secret)));
    return { keyId: key.id, at };
  },
  NEW_SOURCE_IP: async (admin) => {
    const key = await admin.key_({ name: 'roaming' });
    await admin.verify(key.secret, { ip: '192.0.2.10' });
    await new Promise((r) => setTimeout(r, 1100)); // past the 1 s learning period
    const at = performance.now();
    await admin.verify(key.secret, { ip: '203.0.113.10' });
    return { keyId: key.id, at };
  },
  KEY_EXPIRING: async (admin) => {
    const at = performance.now();
    const key = await admin.key_({ name: 'soon', expiresAt: new Date(Date.now() + 2 * 86_400_000).toISOString() });
    return { keyId: key.id, at };
  },
  DENIED_ACTION_BURST: async (admin, member) => {
    const denied = () =>
      fetch(`${admin.base}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${member}` },
        body: JSON.stringify({ query: 'mutation { createRole(input: { name: "nope", permissions: [] }) { id } }' }),
      });
    for (let i = 0; i < 4; i++) await denied();
    const at = performance.now();
    await denied();
    return { keyId: null, at };
  },
  THRESHOLD: async (admin) => {
    const key = await admin.key_({ name: 'ruled' });
    await gql(admin.base, admin.key, 'mutation($k: ID!) { createAlertRule(input: { name: "bench", metric: VERIFY_CALLS, threshold: 10, windowSeconds: 60, severity: HIGH, keyId: $k }) { id } }', { k: key.id });
    for (let i = 0; i < 9; i++) await admin.verify(key.secret);
    const at = performance.now();
    await admin.verify(key.secret);
    return { keyId: key.id, at };
  },
};

async function detection(server: Running, admin: Admin, member: string, runs: number): Promise<void> {
  const arrivals: Arrival[] = [];
  const client = await subscribe(server.base, admin.key, (alert) => arrivals.push(alert));
  console.log(`\ndetection: the completing request -> the alert at a subscriber (ms), ${runs} runs per type\n`);
  console.log('| type | p50 | p95 | max |');
  console.log('|---|---:|---:|---:|');
  for (const [type, trigger] of Object.entries(TRIGGERS)) {
    const times: number[] = [];
    for (let run = 0; run < runs; run++) {
      arrivals.length = 0;
      const { keyId, at } = await trigger(admin, member);
      const got = await arrival(arrivals, (a) => a.type === type && (keyId === null || a.keyId === keyId));
      times.push(got.at - at);
      // The next run's subject must be new: failure bursts and denials share windows otherwise.
      if (type === 'DENIED_ACTION_BURST' || type === 'THRESHOLD') break;
    }
    console.log(`| ${type} | ${percentile(times, 50).toFixed(1)} | ${percentile(times, 95).toFixed(1)} | ${Math.max(...times).toFixed(1)} |`);
  }
  await client.dispose();
}

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const server = await startKeyledger({
    DATABASE_URL: db.url,
    KEY_PEPPER: randomBytes(32).toString('hex'),
    BOOTSTRAP_ADMIN_KEY: adminKey,
    // Short windows so each type can be triggered within seconds.
    ALERT_SPIKE_BUCKET_SECONDS: '1',
    ALERT_SPIKE_HISTORY_BUCKETS: '3',
    ALERT_SPIKE_MIN_CALLS: '20',
    ALERT_NEW_IP_LEARNING_SECONDS: '1',
  });
  try {
    const admin = new Admin(server.base, adminKey);
    const { roles } = await gql<{ roles: Array<{ id: string; name: string }> }>(server.base, adminKey, '{ roles { id name } }');
    const member = (await admin.key_({ name: 'member', roleIds: [roles.find((r) => r.name === 'member')!.id] })).secret;
    await fanOut(server, admin);
    await detection(server, admin, member, Number(process.env.RUNS ?? 5));
  } finally {
    await server.stop();
    await db.cleanup();
  }
}

runBench(main);
