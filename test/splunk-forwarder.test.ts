import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { CHAIN_LOCK } from '../src/services/audit.service';
import { SplunkForwarder, type SplunkForwarderOptions } from '../src/services/splunk-forwarder';
import { CreateUserDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

const TOKEN = 'hec-token-0b7c1f9e-do-not-leak';

type Mode = 'accept' | 'busy' | 'bad-data' | 'ok-but-code';

interface HecRecord {
  time: number;
  sourcetype: string;
  event: { id: string; action: string };
  fields: { event_id: string; action: string; outcome: string };
}

/** A local HTTP server that plays Splunk's HTTP Event Collector: records what it accepts, refuses on demand. */
class FakeHec {
  mode: Mode = 'accept';
  /** Added to every answer, so a test can stop a forwarder while a batch is in flight */
  delayMs = 0;
  readonly accepted: HecRecord[] = [];
  readonly batchSizes: number[] = [];
  readonly authorizations: string[] = [];
  readonly contentTypes: string[] = [];
  refusals = 0;
  port = 0;
  private server: Server | null = null;

  get url(): string {
    return `http://127.0.0.1:${this.port}/services/collector/event`;
  }

  get ids(): string[] {
    return this.accepted.map((r) => r.fields.event_id);
  }

  /** Listens on a free port the first time, on the same port after close() (the forwarder's url stays valid). */
  async open(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req).then(([status, body]) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** An outage: the port stops answering, open connections included. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage): Promise<[number, Record<string, unknown>]> {
    let body = '';
    for await (const chunk of req) body += String(chunk);
    const answer = this.answer(req, body);
    // Slow after recording: the batch is accepted but the forwarder is still waiting for the answer.
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    return answer;
  }

  private answer(req: IncomingMessage, body: string): [number, Record<string, unknown>] {
    if (req.method !== 'POST' || req.url !== '/services/collector/event') return [404, { text: 'not found', code: 404 }];
    if (req.headers.authorization !== `Splunk ${TOKEN}`) return [401, { text: 'Invalid authorization', code: 3 }];
    if (this.mode === 'busy') return this.refuse(503, 9, 'Server is busy');
    if (this.mode === 'bad-data') return this.refuse(400, 6, 'Invalid data format');
    if (this.mode === 'ok-but-code') return this.refuse(200, 9, 'Server is busy');
    const records = body.split('\n').filter(Boolean).map((line) => JSON.parse(line) as HecRecord);
    this.accepted.push(...records);
    this.batchSizes.push(records.length);
    this.authorizations.push(req.headers.authorization);
    this.contentTypes.push(req.headers['content-type'] ?? '');
    return [200, { text: 'Success', code: 0 }];
  }

  private refuse(status: number, code: number, text: string): [number, Record<string, unknown>] {
    this.refusals++;
    return [status, { text, code }];
  }
}

let t: TestServer;
const hecs: FakeHec[] = [];
const forwarders: SplunkForwarder[] = [];

before(async () => {
  t = await startTestServer();
  await recordEvents(5, 'setup');
});
after(async () => {
  await Promise.all(forwarders.map((f) => f.stop()));
  await Promise.all(hecs.map((h) => h.close()));
  await t.close();
});

async function openHec(): Promise<FakeHec> {
  const hec = new FakeHec();
  await hec.open();
  hecs.push(hec);
  return hec;
}

function forwarder(hec: FakeHec, options: Partial<SplunkForwarderOptions> & { name: string }): SplunkForwarder {
  const f = new SplunkForwarder({
    dataSource: t.server.dataSource,
    url: hec.url,
    token: TOKEN,
    batchSize: 3,
    pollIntervalMs: 20,
    maxBackoffMs: 40,
    requestTimeoutMs: 2000,
    ...options,
  });
  forwarders.push(f);
  return f;
}

async function recordEvents(count: number, tag: string): Promise<void> {
  for (let i = 0; i < count; i++) {
    await t.server.services.audit.recordAlone(SYSTEM_ACTOR, { action: 'forwarder.test', details: { tag, i } }, { waitForSeal: true });
  }
}

async function allEventIds(): Promise<string[]> {
  await t.server.services.audit.settled();
  return (await t.db.query<{ id: string }>('SELECT id::text AS id FROM audit_events e ORDER BY e.id')).map((r) => r.id);
}

async function cursorOf(name: string): Promise<string | undefined> {
  const [row] = await t.db.query<{ id: string }>('SELECT last_event_id::text AS id FROM forwarder_cursors WHERE name = $1', [name]);
  return row?.id;
}

/** Polls until the condition holds; fails with what was awaited when the deadline passes. */
async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function waitForAll(hec: FakeHec, f: SplunkForwarder): Promise<string[]> {
  const ids = await allEventIds();
  await waitFor(`${ids.length} events delivered`, async () => new Set(hec.ids).size >= ids.length && (await f.lag()).events === 0);
  return ids;
}

function assertUnion(received: string[], all: string[]): void {
  assert.deepEqual([...new Set(received)].sort((a, b) => Number(a) - Number(b)), all, 'every event received, none unknown');
}

test('delivers every event exactly once, in id order, HEC-shaped with the event id in fields and the Splunk token', async () => {
  const hec = await openHec();
  const f = forwarder(hec, { name: 'exactly-once' });
  f.start();
  const all = await waitForAll(hec, f);
  await f.stop();

  assert.deepEqual(hec.ids, all, 'each event once, in id order');
  assert.ok(all.length > 5);
  for (const record of hec.accepted) {
    assert.equal(record.fields.event_id, record.event.id);
    assert.equal(record.fields.action, record.event.action);
    assert.equal(record.sourcetype, 'keyledger:audit');
    assert.equal(typeof record.time, 'number');
  }
  assert.ok(hec.batchSizes.every((n) => n >= 1 && n <= 3), `batches of at most 3: ${hec.batchSizes.join(',')}`);
  assert.ok(hec.authorizations.every((a) => a === `Splunk ${TOKEN}`));
  assert.ok(hec.contentTypes.every((c) => c === 'application/json'));
  assert.ok(!inspect(f, { depth: 1 }).includes(TOKEN), 'inspecting the forwarder does not show the token');
  assert.equal(f.delivered, all.length);
  assert.equal(f.failures, 0);
  assert.equal(await cursorOf('exactly-once'), all.at(-1));
});

test('wake() runs a round at once instead of after the poll interval', async () => {
  const hec = await openHec();
  const f = forwarder(hec, { name: 'wake', pollIntervalMs: 60_000 });
  f.start();
  await waitForAll(hec, f);
  // Created through GraphQL: the mutation's own event, and the forwarder is idle for a minute.
  await t.ok(t.adminKey, CreateUserDocument, { input: { name: 'woken', email: 'woken@example.com' } });
  await t.server.services.audit.settled(); // as the seal's announcement would be
  f.wake();
  const all = await waitForAll(hec, f);
  assert.equal(hec.accepted.at(-1)!.event.action, 'user.create');
  assert.deepEqual(hec.ids, all);
  await f.stop();
});

test('refusals (503, 400 code 6, 200 with a non-zero code) keep the cursor, are retried, and lose nothing', async () => {
  const hec = await openHec();
  hec.mode = 'busy';
  const errors: unknown[] = [];
  const f = forwarder(hec, { name: 'refusals', onError: (e) => errors.push(e) });
  f.start();
  await waitFor('three 503 refusals', () => hec.refusals >= 3);
  hec.mode = 'bad-data';
  await waitFor('three 400 refusals', () => hec.refusals >= 6);
  hec.mode = 'ok-but-code';
  await waitFor('three non-zero codes', () => hec.refusals >= 9);

  assert.equal(hec.accepted.length, 0);
  assert.equal(await cursorOf('refusals'), '0', 'cursor not advanced while refusing');
  assert.equal((await f.lag()).events, (await allEventIds()).length);
  assert.equal(f.delivered, 0);
  assert.ok(f.failures >= 9);
  const messages = errors.map((e) => (e instanceof Error ? e.message : String(e)));
  assert.ok(messages.some((m) => /HTTP 503/.test(m)), messages[0]);
  assert.ok(messages.some((m) => /HTTP 400 \(code 6/.test(m)));
  assert.ok(messages.some((m) => /HTTP 200 \(code 9/.test(m)));
  assert.ok(messages.every((m) => !m.includes(TOKEN)), 'the token is in no error message');

  hec.mode = 'accept';
  const all = await waitForAll(hec, f);
  await f.stop();
  assert.deepEqual(hec.ids, all, 'refused batches were not half-accepted: each event once, in order');
  assert.equal(await cursorOf('refusals'), all.at(-1));
  assert.ok(t.logs.every((line) => !line.includes(TOKEN)), 'the token is in no log line');
});

test('an outage of the collector loses nothing', async () => {
  const hec = await openHec();
  const errors: unknown[] = [];
  const f = forwarder(hec, { name: 'outage', onError: (e) => errors.push(e) });
  f.start();
  await waitForAll(hec, f);
  const failuresBefore = f.failures;

  await hec.close();
  await recordEvents(7, 'during outage');
  await waitFor('failed deliveries during the outage', () => f.failures >= failuresBefore + 3);
  assert.ok((await f.lag()).events >= 7, 'the outage shows as lag');
  const messages = errors.map((e) => (e instanceof Error ? e.message : String(e)));
  assert.ok(messages.some((m) => /unreachable/.test(m)), messages[0]);
  assert.ok(messages.every((m) => !m.includes(TOKEN)));

  await hec.open();
  const all = await waitForAll(hec, f);
  await f.stop();
  assertUnion(hec.ids, all);
  assert.equal(await cursorOf('outage'), all.at(-1));
});

test('no loss across a restart: a new forwarder resumes from the persistent cursor', async () => {
  await recordEvents(20, 'before restart');
  const hec = await openHec();
  // Slow answers, so the first forwarder is stopped with most of the backlog still to go.
  hec.delayMs = 30;
  const first = forwarder(hec, { name: 'restart' });
  first.start();
  // The second batch is recorded and its answer is 30 ms away: stop() must wait for it and save the cursor.
  await waitFor('two batches', () => hec.accepted.length >= 6);
  await first.stop();

  const cursor = await cursorOf('restart');
  const lastReceived = hec.ids.at(-1)!;
  assert.equal(cursor, lastReceived, 'stop() waited for the delivery under way and saved its cursor');
  const allBefore = await allEventIds();
  assert.ok(Number(cursor) < Number(allBefore.at(-1)), 'stopped mid-way');
  const receivedByFirst = hec.accepted.length;

  await recordEvents(4, 'while stopped');
  await t.ok(t.adminKey, CreateUserDocument, { input: { name: 'restarted', email: 'restarted@example.com' } });
  hec.delayMs = 0;
  const second = forwarder(hec, { name: 'restart' });
  const pending = (await allEventIds()).filter((id) => Number(id) > Number(cursor)).length; // sealed first
  assert.equal((await second.lag()).events, pending);
  second.start();
  const all = await waitForAll(hec, second);
  await second.stop();

  assertUnion(hec.ids, all);
  const resumed = hec.accepted.slice(receivedByFirst);
  assert.ok(Number(resumed[0]!.fields.event_id) > Number(cursor), 'the new instance started after the cursor, not from the beginning');
  // At-least-once: whatever was sent twice is recognisable by its event id.
  assert.ok(hec.accepted.every((r) => r.fields.event_id === r.event.id));
});

test('lag() counts undelivered events and the age of the oldest, and is zero once delivered', async () => {
  const hec = await openHec();
  const f = forwarder(hec, { name: 'lag' });
  const all = await allEventIds();
  const [oldest] = await t.db.query<{ seconds: number }>('SELECT extract(epoch FROM now() - min(occurred_at))::float8 AS seconds FROM audit_events');
  const before = await f.lag();
  assert.equal(before.events, all.length, 'no cursor row yet: everything is lag');
  assert.ok(before.seconds > 0 && before.seconds >= oldest!.seconds - 1, `age of the oldest event: ${before.seconds}`);

  f.start();
  await waitForAll(hec, f);
  assert.deepEqual(await f.lag(), { events: 0, seconds: 0 });
  await f.stop();
  await recordEvents(2, 'lag');
  const stopped = await f.lag();
  assert.equal(stopped.events, (await allEventIds()).length - all.length);
  assert.ok(stopped.seconds >= 0 && stopped.seconds < 60);
});

test('lag() also counts committed events still waiting for their seal', async () => {
  const hec = await openHec();
  const f = forwarder(hec, { name: 'lag-staged' });
  f.start();
  await waitForAll(hec, f);
  await f.stop();
  assert.equal((await f.lag()).events, 0);
  // Holding the chain's lock keeps the next commits staged: committed, not yet sealed.
  const holder = new Client({ connectionString: t.db.url });
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock($1)', [CHAIN_LOCK]);
    await t.server.services.audit.recordAlone(SYSTEM_ACTOR, { action: 'forwarder.test', details: { tag: 'staged' } });
    await t.server.services.audit.recordAlone(SYSTEM_ACTOR, { action: 'forwarder.test', details: { tag: 'staged' } });
    const [staged] = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_staging');
    assert.equal(staged!.n, 2, 'both events are still staged');
    const lag = await f.lag();
    assert.equal(lag.events, 2, 'staged events are lag too');
    assert.ok(lag.seconds >= 0 && lag.seconds < 60);
  } finally {
    await holder.query('SELECT pg_advisory_unlock($1)', [CHAIN_LOCK]);
    await holder.end();
  }
  f.start();
  await waitForAll(hec, f);
  assert.equal((await f.lag()).events, 0);
  await f.stop();
});

test('several instances forwarding to one destination deliver each event once: the cursor row is a per-round lock', async () => {
  const hec = await openHec();
  // Three forwarders on the same cursor, as three server instances with the same configuration.
  const group = [1, 2, 3].map(() => forwarder(hec, { name: 'shared-cursor', pollIntervalMs: 5 }));
  hec.delayMs = 15; // long enough that rounds overlap if nothing stops them
  group.forEach((f) => f.start());
  await recordEvents(12, 'shared');
  const all = await allEventIds();
  const deadline = Date.now() + 10_000;
  while (hec.ids.length < all.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100)); // any duplicate round would land by now
  await Promise.all(group.map((f) => f.stop()));
  hec.delayMs = 0;

  assert.deepEqual(hec.ids, all, 'every event once, in id order, across all three');
  assert.equal(group.reduce((sum, f) => sum + f.delivered, 0), all.length);
  assert.ok(group.filter((f) => f.delivered > 0).length >= 1);
  assert.equal(await cursorOf('shared-cursor'), all.at(-1));
});
