import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Client } from 'pg';
import { generateKey } from '../src/auth/key-format';
import {
  DgAlertsDocument,
  DgCreateKeyDocument,
  DgCreateRuleDocument,
  DgCreateUserDocument,
  DgRolesDocument,
  DgUsersDocument,
  DgVerifyDocument,
  type AlertFilter,
  type DgAlertsQuery,
} from './generated/graphql';
import { AlertMetric } from '../src/entities/enums';
import { DetectorGossip, type SharedHit } from '../src/services/detector-gossip';
import type { EventBus } from '../src/services/event-bus';
import { Cluster, redisForTests, sleep, type Instance } from './helpers/cluster';
import { createTestDatabase, type TestDatabase } from './helpers/database';

/**
 * Burst and rule detectors count what every instance sees: hits travel between instances on the
 * event bus (PostgreSQL NOTIFY, or Redis with REDIS_URL), so an attack spread behind a load
 * balancer adds up to one alert. Real server processes on one database.
 */

type AlertNode = DgAlertsQuery['alerts']['nodes'][number];

const PEPPER = randomBytes(32).toString('base64url');
const ADMIN_KEY = generateKey('kl');
const FAILURE_THRESHOLD = 6;
const DENIED_THRESHOLD = 4;
/** Longer than a shared hit needs to reach a peer (batched every 100 ms) */
const SETTLE_MS = 1500;

const cluster = new Cluster();
const redis = redisForTests();
let db: TestDatabase;
let env: Record<string, string>;
let A: Instance;
let B: Instance;

before(async () => {
  db = await createTestDatabase();
  env = {
    DATABASE_URL: db.url,
    KEY_PEPPER: PEPPER,
    BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
    ALERT_FAILURE_BURST: `${FAILURE_THRESHOLD}/60`,
    ALERT_DENIED_BURST: `${DENIED_THRESHOLD}/60`,
  };
  A = await cluster.start('A', env);
  B = await cluster.start('B', env);
});

after(async () => {
  await cluster.stopAll();
  await db?.drop();
});

const unique = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

let lastHost = 0;
/** A documentation address (192.0.2.0/24) of its own for each test, so tests never share a source. */
function testIp(): string {
  return `192.0.2.${++lastHost}`;
}

/** `count` failed verifications (a well-formed key nobody holds) presented from `ip`, through `instance`. */
async function failFrom(instance: Instance, ip: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const { verifyKey } = await instance.ok(ADMIN_KEY, DgVerifyDocument, { input: { key: generateKey('kl'), ip } });
    assert.equal(verifyKey.valid, false);
  }
}

/** A member with a key that may not list users: each try is one FORBIDDEN answer. */
async function prober(): Promise<{ userId: string; key: { secret: string; apiKey: { id: string } } }> {
  const roleIds = (await A.ok(ADMIN_KEY, DgRolesDocument)).roles.filter((r) => r.name === 'member').map((r) => r.id);
  const name = unique('prober');
  const { createUser } = await A.ok(ADMIN_KEY, DgCreateUserDocument, { input: { name, email: `${name}@example.test`, roleIds } });
  const key = (await A.ok(ADMIN_KEY, DgCreateKeyDocument, { input: { ownerId: createUser.id, name: 'prober', permissions: ['keys:own'] } })).createApiKey;
  return { userId: createUser.id, key };
}

async function denyOn(instance: Instance, secret: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    const answer = await instance.request(secret, DgUsersDocument);
    assert.equal(answer.errors?.[0]?.extensions?.code, 'FORBIDDEN');
  }
}

async function alerts(instance: Instance, filter: AlertFilter): Promise<AlertNode[]> {
  return (await instance.ok(ADMIN_KEY, DgAlertsDocument, { filter })).alerts.nodes;
}

const fromIp = (nodes: AlertNode[], ip: string) =>
  nodes.filter((n) => ((n.details as { sample?: { ip?: string[] } }).sample?.ip ?? []).includes(ip));

async function waitFor<T>(probe: () => Promise<T[]>, what: string): Promise<T[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const found = await probe();
    if (found.length > 0) return found;
    if (Date.now() > deadline) assert.fail(`no alert: ${what}`);
    await sleep(100);
  }
}

describe('without Redis (PostgreSQL NOTIFY)', () => {
  test(`failures from one address split ${FAILURE_THRESHOLD / 2} + ${FAILURE_THRESHOLD / 2} over two instances raise VERIFY_FAILURE_BURST`, async () => {
    const ip = testIp();
    await failFrom(A, ip, FAILURE_THRESHOLD / 2);
    await failFrom(B, ip, FAILURE_THRESHOLD / 2);
    const raised = await waitFor(async () => fromIp(await alerts(A, { types: ['VERIFY_FAILURE_BURST'] }), ip), `burst from ${ip}`);
    assert.equal(raised.length, 1, 'one alert, however many instances saw the line crossed');
    assert.equal((raised[0]!.details as { threshold: number }).threshold, FAILURE_THRESHOLD);
  });

  test('one failure fewer over both instances raises nothing, and an instance does not count its own shared hits twice', async () => {
    const ip = testIp();
    // Counted twice, A's 3 would already be 6 on A.
    await failFrom(A, ip, FAILURE_THRESHOLD / 2);
    await failFrom(B, ip, FAILURE_THRESHOLD / 2 - 1);
    await sleep(SETTLE_MS);
    assert.deepEqual(fromIp(await alerts(A, { types: ['VERIFY_FAILURE_BURST'] }), ip), []);
    assert.deepEqual(fromIp(await alerts(B, { types: ['VERIFY_FAILURE_BURST'] }), ip), []);
  });

  test(`FORBIDDEN answers to one key split over two instances raise DENIED_ACTION_BURST for that key`, async () => {
    const { key } = await prober();
    await denyOn(A, key.secret, DENIED_THRESHOLD / 2);
    await denyOn(B, key.secret, DENIED_THRESHOLD / 2);
    const raised = await waitFor(async () => (await alerts(A, { types: ['DENIED_ACTION_BURST'] })).filter((n) => n.key?.id === key.apiKey.id), 'denied burst');
    assert.equal(raised.length, 1);
  });

  test('a THRESHOLD rule on DENIED_ACTIONS counts each denial once, wherever it happened', async () => {
    const { key, userId } = await prober();
    const { createAlertRule } = await A.ok(ADMIN_KEY, DgCreateRuleDocument, {
      input: { name: unique('denials'), metric: 'DENIED_ACTIONS', threshold: 3, windowSeconds: 60, severity: 'LOW', userId },
    });
    await sleep(500); // B hears of the new rule through NOTIFY
    const ruleAlerts = async () => (await alerts(A, { types: ['THRESHOLD'] })).filter((n) => n.rule?.id === createAlertRule.id);
    await denyOn(A, key.secret, 1);
    await denyOn(B, key.secret, 1);
    await sleep(SETTLE_MS);
    assert.deepEqual(await ruleAlerts(), [], 'two denials counted as three');
    await denyOn(B, key.secret, 1);
    await waitFor(ruleAlerts, 'rule');
  });

  test('a THRESHOLD rule counts matching verifications on every instance', async () => {
    const ip = testIp();
    const { createAlertRule } = await A.ok(ADMIN_KEY, DgCreateRuleDocument, {
      input: { name: unique('failures'), metric: 'VERIFY_FAILURES', threshold: 4, windowSeconds: 60, severity: 'MEDIUM' },
    });
    await sleep(500); // B hears of the new rule through NOTIFY
    await failFrom(A, ip, 2);
    await failFrom(B, ip, 2);
    const raised = await waitFor(async () => (await alerts(B, { types: ['THRESHOLD'] })).filter((n) => n.rule?.id === createAlertRule.id), 'rule');
    assert.equal(raised.length, 1);
  });

  test('whatever else is published on the channel is ignored: malformed messages and hits do not count and stop nothing', async () => {
    const ip = testIp();
    const junk = [
      'not json',
      '{"origin":"x","hits":"nope"}',
      JSON.stringify({ origin: 'x', hits: [{ kind: 'failure', evidence: {}, keyId: null, ownerId: null, source: ip.repeat(40) }] }),
      JSON.stringify({ origin: 'x', hits: [{ kind: 'failure', evidence: { ip: 7 }, keyId: null, ownerId: null, source: ip }] }),
      JSON.stringify({ origin: 'x', hits: [{ kind: 'rule', metric: 'NO_SUCH_METRIC', keyId: null, userId: null, evidence: {} }] }),
      JSON.stringify({ origin: 'x', hits: [null, 1, 'a', { kind: 'other' }] }),
      // Field names a plain object inherits: they once crashed every instance that counted them.
      JSON.stringify({
        origin: 'x',
        hits: Array.from({ length: FAILURE_THRESHOLD }, () => ({ kind: 'failure', evidence: { constructor: 'x', code: 'NOT_FOUND' }, keyId: null, ownerId: null, source: ip })),
      }),
    ];
    const sql = new Client({ connectionString: db.url });
    await sql.connect();
    try {
      for (let round = 0; round < FAILURE_THRESHOLD; round++) {
        for (const payload of junk) await sql.query('SELECT pg_notify($1, $2)', ['keyledger_detector_hits', payload]);
      }
    } finally {
      await sql.end();
    }
    await failFrom(A, ip, FAILURE_THRESHOLD - 1);
    await sleep(SETTLE_MS);
    assert.equal(A.process.child.exitCode, null, 'A still runs');
    assert.equal(B.process.child.exitCode, null, 'B still runs');
    assert.deepEqual(fromIp(await alerts(B, { types: ['VERIFY_FAILURE_BURST'] }), ip), [], 'junk counted as failures');
    // Both still count what is real.
    await failFrom(B, ip, 1);
    await waitFor(async () => fromIp(await alerts(A, { types: ['VERIFY_FAILURE_BURST'] }), ip), `burst from ${ip}`);
  });
});

describe('with REDIS_URL', { skip: redis.skip }, () => {
  let RA: Instance;
  let RB: Instance;
  before(async () => {
    RA = await cluster.start('RA', { ...env, REDIS_URL: redis.url! });
    RB = await cluster.start('RB', { ...env, REDIS_URL: redis.url! });
  });

  test('failures from one address split over two instances raise VERIFY_FAILURE_BURST; one fewer does not', async () => {
    const ip = testIp();
    await failFrom(RA, ip, FAILURE_THRESHOLD / 2);
    await failFrom(RB, ip, FAILURE_THRESHOLD / 2 - 1);
    await sleep(SETTLE_MS);
    assert.deepEqual(fromIp(await alerts(RA, { types: ['VERIFY_FAILURE_BURST'] }), ip), []);
    await failFrom(RB, ip, 1);
    const raised = await waitFor(async () => fromIp(await alerts(RA, { types: ['VERIFY_FAILURE_BURST'] }), ip), `burst from ${ip}`);
    assert.equal(raised.length, 1);
  });
});

describe('what one instance sends', () => {
  /** The bus as a list of what was published; the gossip under test is the only publisher. */
  function recordingBus(): { bus: EventBus; sent: string[] } {
    const sent: string[] = [];
    const bus: EventBus = {
      statement: () => null,
      committed: () => {},
      publish: async (_channel, payload) => {
        sent.push(payload);
      },
      subscribe: () => {},
      ready: async () => {},
      close: async () => {},
    };
    return { bus, sent };
  }
  const failure = (ip: string, resource: string | null = null): SharedHit => ({
    kind: 'failure',
    evidence: { code: 'NOT_FOUND', ip, keyId: null, resource },
    keyId: null,
    ownerId: null,
    source: ip,
  });
  const hitsIn = (sent: string[]) => sent.flatMap((payload) => (JSON.parse(payload) as { hits: SharedHit[] }).hits);

  test("a subject's hits beyond what its window keeps are not sent", async () => {
    const { bus, sent } = recordingBus();
    const gossip = new DetectorGossip(bus, (error) => assert.fail(String(error)));
    for (let i = 0; i < 30; i++) gossip.share(failure('192.0.2.1'), 'fail:192.0.2.1:null', 6);
    gossip.share(failure('192.0.2.2'), 'fail:192.0.2.2:null', 6);
    await gossip.flush();
    const hits = hitsIn(sent);
    assert.equal(hits.length, 7);
    assert.equal(gossip.unshared, 0, 'not sent because redundant, not because the batch was full');
  });

  test('a batch holds at most 500 burst hits; rule hits have room of their own; the rest is counted as unshared', async () => {
    const { bus, sent } = recordingBus();
    const gossip = new DetectorGossip(bus, (error) => assert.fail(String(error)));
    for (let i = 0; i < 600; i++) gossip.share(failure(`10.0.${i >> 8}.${i & 255}`), `fail:${i}`, 20);
    gossip.share({ kind: 'rule', metric: AlertMetric.VERIFY_CALLS, keyId: null, userId: null, evidence: {} }, 'rule:x', 20);
    await gossip.flush();
    const hits = hitsIn(sent);
    assert.equal(hits.filter((h) => h.kind === 'failure').length, 500);
    assert.equal(hits.filter((h) => h.kind === 'rule').length, 1);
    assert.equal(gossip.unshared, 100);
  });

  test('a flood of failures leaves room for denials: each kind has its own share of a batch', async () => {
    const { bus, sent } = recordingBus();
    const gossip = new DetectorGossip(bus, (error) => assert.fail(String(error)));
    for (let i = 0; i < 2000; i++) gossip.share(failure(`10.2.${i >> 8}.${i & 255}`), `fail:${i}`, 20);
    gossip.share({ kind: 'denied', operation: 'Query.users', ip: null, keyId: 'k', userId: null }, 'denied:key:k', 5);
    await gossip.flush();
    assert.equal(hitsIn(sent).filter((h) => h.kind === 'denied').length, 1);
  });

  test('every message fits a PostgreSQL NOTIFY (under 8000 bytes), long texts cut to 256 characters, none lost', async () => {
    const { bus, sent } = recordingBus();
    const gossip = new DetectorGossip(bus, (error) => assert.fail(String(error)));
    for (let i = 0; i < 200; i++) gossip.share(failure(`10.1.0.${i}`, `/é${'x'.repeat(5000)}`), `fail:${i}`, 20);
    await gossip.flush();
    assert.ok(sent.length > 1);
    for (const payload of sent) assert.ok(Buffer.byteLength(payload) < 8000, `${Buffer.byteLength(payload)} bytes`);
    const hits = hitsIn(sent);
    assert.equal(hits.length, 200);
    for (const hit of hits) assert.equal((hit as { evidence: Record<string, string> }).evidence.resource!.length, 256);
  });
});
