import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../src/auth/key-format';
import type { AlertSettings } from '../src/services/alert-detectors';
import {
  AlAcknowledgeDocument,
  AlAlertRulesDocument,
  AlAlertsDocument,
  AlAuditEventsDocument,
  AlCreateKeyDocument,
  AlCreateRuleDocument,
  AlDeleteRuleDocument,
  AlDisableKeyDocument,
  AlResolveDocument,
  AlRevokeKeyDocument,
  AlRotateKeyDocument,
  AlUpdateRuleDocument,
  AlUsersDocument,
  AlVerifyDocument,
  AlVerifyManyDocument,
  AlViewerDocument,
  type AlAlertsQuery,
  type AlertFilter,
  type AlertType,
  type CreateAlertRuleInput,
  type CreateApiKeyInput,
  type VerifyKeyInput,
} from './generated/graphql';
import { firstErrorWithCode, roleIdByName, unique } from './helpers/fixtures';
import { createHuman, expectBadInput, expectError, pollUntil, sleep, viewerOf, type KeyPrincipal } from './helpers/key-principals';
import { createPrincipal, principalWithPermissions, type TestPrincipal } from './helpers/principals';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * Alerts end to end on real servers: every AlertType fires on its cause and stays quiet on a near
 * miss, deduplication, filters and pagination, handling (acknowledge/resolve), rules and their
 * audit trail. Raising is asynchronous (queued after the verification answered), so alerts are
 * polled for; the absence of an alert is only asserted after a barrier (see quiesce).
 */

type AlertNode = AlAlertsQuery['alerts']['nodes'][number];
type Details = Record<string, unknown>;

/** Small thresholds and windows; detectors a test does not exercise on this server are out of reach. */
const MAIN_SETTINGS: AlertSettings = {
  failureBurst: { threshold: 5, windowSeconds: 60 },
  deniedBurst: { threshold: 5, windowSeconds: 60 },
  dedupSeconds: 3600,
  // Polling alerts with the admin key would otherwise look like a spike of that key.
  spike: { bucketSeconds: 60, historyBuckets: 1_000_000, floor: 1_000_000_000, factor: 4, sigmas: 6, minCalls: 1_000_000, peakFactor: 1.5, peakHalfLifeBuckets: 1440 },
  newIpLearningSeconds: 0,
  quotaLow: { fraction: 0.1, remaining: 3 },
  expiring: { days: 7, scanSeconds: 1 },
};

const SPIKE_SETTINGS: AlertSettings = {
  ...MAIN_SETTINGS,
  spike: { bucketSeconds: 1, historyBuckets: 3, floor: 50, factor: 4, sigmas: 6, minCalls: 10, peakFactor: 1.5, peakHalfLifeBuckets: 1440 },
  newIpLearningSeconds: 2,
};

/** Main server: small settings, TRUST_PROXY so API calls can come "from" other addresses (X-Forwarded-For). */
let main: TestServer;
/** USAGE_SPIKE with 1-second buckets, and a 2-second NEW_SOURCE_IP learning period */
let spiky: TestServer;
let admin: KeyPrincipal;

before(async () => {
  [main, spiky] = await Promise.all([
    startTestServer({ alerts: MAIN_SETTINGS, trustProxy: true }),
    startTestServer({ alerts: SPIKE_SETTINGS }),
  ]);
  admin = await viewerOf(main, main.adminKey);
});
after(async () => {
  await Promise.all([main?.close(), spiky?.close()]);
});

// ---------------------------------------------------------------------------------------------
// helpers

interface Key {
  id: string;
  secret: string;
  ownerId: string;
  name: string;
}

/** As admin: a key for `ownerId` (default: a fresh human with no roles). */
async function newKey(s: TestServer, input: Partial<CreateApiKeyInput> = {}): Promise<Key> {
  const ownerId = input.ownerId ?? (await createHuman(s, [], 'alert-owner'));
  const name = input.name ?? unique('al-key');
  const data = await s.ok(s.adminKey, AlCreateKeyDocument, { input: { permissions: [], ...input, ownerId, name } });
  return { id: data.createApiKey.apiKey.id, secret: data.createApiKey.secret, ownerId, name };
}

async function revoke(s: TestServer, key: Key): Promise<void> {
  assert.equal((await s.ok(s.adminKey, AlRevokeKeyDocument, { id: key.id })).revokeApiKey.status, 'REVOKED');
}

async function disable(s: TestServer, key: Key): Promise<void> {
  assert.equal((await s.ok(s.adminKey, AlDisableKeyDocument, { id: key.id })).disableApiKey.status, 'DISABLED');
}

/** verifyKey as admin (who holds keys:verify through '*'). */
async function verify(s: TestServer, input: VerifyKeyInput): Promise<{ code: string; remaining?: number | null }> {
  return (await s.ok(s.adminKey, AlVerifyDocument, { input })).verifyKey;
}

async function verifyMany(s: TestServer, inputs: VerifyKeyInput[]): Promise<Array<{ code: string; remaining?: number | null }>> {
  return (await s.ok(s.adminKey, AlVerifyManyDocument, { inputs })).verifyKeys;
}

/** An API call authenticated with `secret`, optionally "from" `ip` (the main server trusts X-Forwarded-For). */
async function callApi(s: TestServer, secret: string, ip?: string) {
  return s.request(secret, AlViewerDocument, {}, ip ? { 'x-forwarded-for': ip } : {});
}

async function alerts(s: TestServer, filter: AlertFilter, first = 500): Promise<AlertNode[]> {
  return (await s.ok(s.adminKey, AlAlertsDocument, { filter, first })).alerts.nodes;
}

/** Polls `alerts(filter)` (raising is queued) until `done` accepts the list; fails after `timeoutMs`. */
async function waitForAlerts(
  s: TestServer,
  filter: AlertFilter,
  done: (nodes: AlertNode[]) => boolean,
  what: string,
  timeoutMs = 3500,
): Promise<AlertNode[]> {
  return (await pollUntil(() => alerts(s, filter), done, { timeoutMs, intervalMs: 100, what })).value;
}

/** Exactly one alert of `type` for the key, waited for. */
async function oneAlertFor(s: TestServer, type: AlertType, keyId: string): Promise<AlertNode> {
  const nodes = await waitForAlerts(s, { types: [type], keyId }, (n) => n.length > 0, `${type} for key ${keyId}`);
  await sleep(150);
  const settled = await alerts(s, { types: [type], keyId });
  assert.equal(settled.length, 1, `exactly one ${type} alert for the key: ${JSON.stringify(settled)}`);
  assert.equal(settled[0]!.id, nodes[0]!.id);
  return settled[0]!;
}

/**
 * A barrier for "nothing was raised": a sentinel cause (a revoked key presented) is emitted after
 * everything the test did, and its alert is waited for; the queue is worked in order, so anything
 * emitted before it has been raised (or not) by then, give or take the few raised concurrently.
 */
async function quiesce(s: TestServer): Promise<void> {
  const sentinel = await newKey(s, { name: unique('sentinel') });
  await revoke(s, sentinel);
  assert.equal((await verify(s, { key: sentinel.secret })).code, 'REVOKED');
  await oneAlertFor(s, 'REVOKED_KEY_USED', sentinel.id);
  await sleep(300);
}

async function noAlert(s: TestServer, filter: AlertFilter, what: string): Promise<void> {
  const nodes = await alerts(s, filter);
  assert.deepEqual(nodes, [], `no alert expected: ${what}`);
}

function details(alert: AlertNode): Details {
  assert.ok(alert.details, 'the alert has details');
  return alert.details;
}

function sample(alert: AlertNode, field: string): unknown[] {
  const s = details(alert).sample as Record<string, unknown[]> | undefined;
  assert.ok(s && typeof s === 'object', `details.sample is an object: ${JSON.stringify(alert.details)}`);
  return s[field] ?? [];
}

/** Waits until the alert's details.repeats reaches `repeats` (repeats are added once a second). */
async function waitForRepeats(s: TestServer, alertId: string, filter: AlertFilter, repeats: number): Promise<AlertNode> {
  const nodes = await waitForAlerts(
    s,
    filter,
    (n) => n.some((a) => a.id === alertId && Number(a.details?.repeats) >= repeats),
    `repeats ${repeats} on alert ${alertId}`,
  );
  return nodes.find((a) => a.id === alertId)!;
}

/** Sleeps until `offsetMs` after the start of the next `bucketMs` bucket. */
async function nextBucket(bucketMs = 1000, offsetMs = 30): Promise<void> {
  await sleep(bucketMs - (Date.now() % bucketMs) + offsetMs);
}

/** Waits until the key's network row exists (networks are remembered asynchronously). */
async function networkRemembered(s: TestServer, keyId: string, network: string): Promise<void> {
  await pollUntil(
    () => s.db.query<{ n: number }>('SELECT count(*)::int AS n FROM key_networks WHERE key_id = $1 AND network = $2::cidr', [keyId, network]),
    (rows) => rows[0]!.n === 1,
    { timeoutMs: 3000, what: `network ${network} remembered for ${keyId}` },
  );
}

async function createRule(s: TestServer, input: Partial<CreateAlertRuleInput> & Pick<CreateAlertRuleInput, 'metric' | 'threshold'>) {
  const data = await s.ok(s.adminKey, AlCreateRuleDocument, {
    input: { name: unique('al-rule'), windowSeconds: 60, severity: 'MEDIUM', ...input },
  });
  return data.createAlertRule;
}

async function auditOf(s: TestServer, filter: { actions: string[]; targetId?: string }) {
  return (await s.ok(s.adminKey, AlAuditEventsDocument, { filter, first: 500 })).auditEvents.nodes;
}

// ---------------------------------------------------------------------------------------------
// VERIFY_FAILURE_BURST

test('VERIFY_FAILURE_BURST: threshold failures from one source address raise one alert; one fewer does not', async () => {
  const ip = '198.51.100.7';
  for (let i = 0; i < 5; i++) assert.equal((await verify(main, { key: generateKey('kl'), ip })).code, 'NOT_FOUND');
  const nearIp = '198.51.100.8';
  for (let i = 0; i < 4; i++) assert.equal((await verify(main, { key: generateKey('kl'), ip: nearIp })).code, 'NOT_FOUND');

  const fromIp = (nodes: AlertNode[], address: string) => nodes.filter((a) => sample(a, 'ip').includes(address));
  const nodes = await waitForAlerts(main, { types: ['VERIFY_FAILURE_BURST'] }, (n) => fromIp(n, ip).length > 0, `burst from ${ip}`);
  const [alert] = fromIp(nodes, ip);
  assert.equal(fromIp(nodes, ip).length, 1);
  assert.equal(alert!.severity, 'HIGH');
  assert.equal(alert!.status, 'OPEN');
  assert.equal(alert!.key, null, 'an address burst names no key');
  assert.equal(alert!.user, null);
  assert.match(alert!.message, /198\.51\.100\.7/);
  const d = details(alert!);
  assert.equal(d.threshold, 5);
  assert.equal(d.windowSeconds, 60);
  assert.equal(d.observed, 5);
  assert.deepEqual(d.codes, { NOT_FOUND: 5 }, 'the evidence counts the codes');
  assert.deepEqual(sample(alert!, 'ip'), [ip]);
  assert.equal(d.repeats, 0);

  await quiesce(main);
  const all = await alerts(main, { types: ['VERIFY_FAILURE_BURST'] });
  assert.deepEqual(fromIp(all, nearIp), [], '4 failures with threshold 5 raise nothing');
});

test("VERIFY_FAILURE_BURST: a verifier that passes no ip is itself the source its failures come from", async () => {
  // TRUST_PROXY on this server: each verifier calls "from" its own address.
  const fromVerifier = async (address: string) => {
    const response = await main.request(main.adminKey, AlVerifyDocument, { input: { key: generateKey('kl') } }, { 'x-forwarded-for': address });
    assert.equal(response.data?.verifyKey.code, 'NOT_FOUND', JSON.stringify(response.errors));
  };
  for (let i = 0; i < 5; i++) await fromVerifier('203.0.113.77');
  for (let i = 0; i < 4; i++) await fromVerifier('203.0.113.78');

  const bySource = (nodes: AlertNode[], address: string) => nodes.filter((a) => a.message.includes(`from ${address} `));
  const nodes = await waitForAlerts(main, { types: ['VERIFY_FAILURE_BURST'] }, (n) => bySource(n, '203.0.113.77').length > 0, 'burst from the verifier');
  const [alert] = bySource(nodes, '203.0.113.77');
  assert.equal(details(alert!).observed, 5);
  assert.deepEqual(sample(alert!, 'ip'), ['203.0.113.77'], 'the evidence names the source');
  assert.equal(alert!.key, null);
  await quiesce(main);
  assert.deepEqual(bySource(await alerts(main, { types: ['VERIFY_FAILURE_BURST'] }), '203.0.113.78'), [], 'one fewer raises nothing');
});

test('VERIFY_FAILURE_BURST: threshold failures against one key (verifyKeys) raise an alert naming the key and its owner', async () => {
  const key = await newKey(main);
  await disable(main, key);
  const near = await newKey(main);
  await disable(main, near);
  const results = await verifyMany(main, [
    ...Array.from({ length: 5 }, () => ({ key: key.secret })),
    ...Array.from({ length: 4 }, () => ({ key: near.secret })),
  ]);
  assert.ok(results.every((r) => r.code === 'DISABLED'));

  const alert = await oneAlertFor(main, 'VERIFY_FAILURE_BURST', key.id);
  assert.equal(alert.severity, 'HIGH');
  assert.equal(alert.key?.id, key.id);
  assert.equal(alert.user?.id, key.ownerId);
  const d = details(alert);
  assert.equal(d.threshold, 5);
  assert.equal(d.observed, 5);
  assert.equal(d.windowSeconds, 60);
  assert.deepEqual(d.codes, { DISABLED: 5 });
  assert.deepEqual(sample(alert, 'keyId'), [key.id]);

  await quiesce(main);
  await noAlert(main, { types: ['VERIFY_FAILURE_BURST'], keyId: near.id }, '4 failures against a key with threshold 5');
});

test('VERIFY_FAILURE_BURST: quota and rate-limit refusals are not failures', async () => {
  const ip = '198.51.100.9';
  const quota = await newKey(main, { remaining: 1 });
  const limited = await newKey(main, { rateLimit: { limit: 1, windowSeconds: 60 } });
  assert.equal((await verify(main, { key: quota.secret, ip })).code, 'VALID');
  assert.equal((await verify(main, { key: limited.secret, ip })).code, 'VALID');
  for (let i = 0; i < 6; i++) {
    assert.equal((await verify(main, { key: quota.secret, ip })).code, 'USAGE_EXCEEDED');
    assert.equal((await verify(main, { key: limited.secret, ip })).code, 'RATE_LIMITED');
  }
  await quiesce(main);
  const bursts = await alerts(main, { types: ['VERIFY_FAILURE_BURST'] });
  assert.deepEqual(
    bursts.filter((a) => sample(a, 'ip').includes(ip) || a.key?.id === quota.id || a.key?.id === limited.id),
    [],
    'USAGE_EXCEEDED and RATE_LIMITED do not count towards a failure burst',
  );
});

test('VERIFY_FAILURE_BURST: API authentication is a verification too (rejected Bearer keys, per key and per address)', async () => {
  const key = await newKey(main);
  await disable(main, key);
  const ip = '192.0.2.50';
  for (let i = 0; i < 5; i++) {
    const response = await callApi(main, key.secret, ip);
    assert.equal(response.status, 401);
    assert.deepEqual(errorCodes(response), ['UNAUTHENTICATED']);
  }
  const alert = await oneAlertFor(main, 'VERIFY_FAILURE_BURST', key.id);
  assert.equal(details(alert).observed, 5);
  assert.deepEqual(sample(alert, 'resource'), ['keyledger:graphql']);
  const byIp = await waitForAlerts(
    main,
    { types: ['VERIFY_FAILURE_BURST'] },
    (n) => n.some((a) => a.key === null && sample(a, 'ip').includes(ip)),
    `burst from ${ip} through API authentication`,
  );
  assert.equal(byIp.filter((a) => a.key === null && sample(a, 'ip').includes(ip)).length, 1);
});

// ---------------------------------------------------------------------------------------------
// REVOKED_KEY_USED / EXPIRED_KEY_USED / RATE_LIMITED

test('REVOKED_KEY_USED: presenting a revoked key (verifyKey or API) raises a HIGH alert; use before revocation does not', async () => {
  const used = await newKey(main);
  await revoke(main, used);
  assert.equal((await verify(main, { key: used.secret, ip: '203.0.113.11', resource: 'invoices/1' })).code, 'REVOKED');

  const alert = await oneAlertFor(main, 'REVOKED_KEY_USED', used.id);
  assert.equal(alert.severity, 'HIGH');
  assert.equal(alert.status, 'OPEN');
  assert.equal(alert.key?.id, used.id);
  assert.equal(alert.user?.id, used.ownerId);
  assert.ok(alert.message.includes(used.name), `the message names the key: ${alert.message}`);
  const d = details(alert);
  assert.equal(d.code, 'REVOKED');
  assert.equal(d.observed, 1);
  assert.equal(d.windowSeconds, 3600);
  assert.deepEqual(sample(alert, 'ip'), ['203.0.113.11']);
  assert.deepEqual(sample(alert, 'resource'), ['invoices/1']);
  assert.equal(d.repeats, 0);
  assert.ok(typeof d.lastSeenAt === 'string' && !Number.isNaN(Date.parse(d.lastSeenAt)), 'details.lastSeenAt');

  // API authentication with a revoked key is a presentation too.
  const viaApi = await newKey(main);
  await revoke(main, viaApi);
  const response = await callApi(main, viaApi.secret, '192.0.2.60');
  assert.equal(response.status, 401);
  const apiAlert = await oneAlertFor(main, 'REVOKED_KEY_USED', viaApi.id);
  assert.deepEqual(sample(apiAlert, 'ip'), ['192.0.2.60']);
  assert.deepEqual(sample(apiAlert, 'resource'), ['keyledger:graphql']);

  // Near misses: valid use before revocation, and a disabled (not revoked) key presented.
  const before = await newKey(main);
  assert.equal((await verify(main, { key: before.secret })).code, 'VALID');
  await revoke(main, before);
  const disabled = await newKey(main);
  await disable(main, disabled);
  assert.equal((await verify(main, { key: disabled.secret })).code, 'DISABLED');
  await quiesce(main);
  await noAlert(main, { types: ['REVOKED_KEY_USED'], keyId: before.id }, 'a key used only before its revocation');
  await noAlert(main, { types: ['REVOKED_KEY_USED'], keyId: disabled.id }, 'a disabled key is not a revoked one');
});

test('EXPIRED_KEY_USED: presenting an expired key raises a LOW alert; a key still in its grace period does not', async () => {
  const expired = await newKey(main);
  await main.ok(main.adminKey, AlRotateKeyDocument, { id: expired.id, gracePeriodSeconds: 0 });
  assert.equal((await verify(main, { key: expired.secret, ip: '203.0.113.12' })).code, 'EXPIRED');
  const alert = await oneAlertFor(main, 'EXPIRED_KEY_USED', expired.id);
  assert.equal(alert.severity, 'LOW');
  assert.equal(alert.key?.id, expired.id);
  assert.equal(alert.user?.id, expired.ownerId);
  assert.equal(details(alert).code, 'EXPIRED');
  assert.equal(details(alert).observed, 1);
  assert.deepEqual(sample(alert, 'ip'), ['203.0.113.12']);

  const graced = await newKey(main);
  await main.ok(main.adminKey, AlRotateKeyDocument, { id: graced.id, gracePeriodSeconds: 3600 });
  assert.equal((await verify(main, { key: graced.secret })).code, 'VALID');
  await quiesce(main);
  await noAlert(main, { types: ['EXPIRED_KEY_USED'], keyId: graced.id }, 'a rotated key inside its grace period is not expired');
});

test('RATE_LIMITED: a key hitting its limit (verifyKey or API) raises a LOW alert; reaching the limit exactly does not', async () => {
  const key = await newKey(main, { rateLimit: { limit: 2, windowSeconds: 60 } });
  const codes = [];
  for (let i = 0; i < 3; i++) codes.push((await verify(main, { key: key.secret, ip: '203.0.113.13' })).code);
  assert.deepEqual(codes, ['VALID', 'VALID', 'RATE_LIMITED']);
  const alert = await oneAlertFor(main, 'RATE_LIMITED', key.id);
  assert.equal(alert.severity, 'LOW');
  assert.equal(alert.key?.id, key.id);
  assert.equal(alert.user?.id, key.ownerId);
  assert.equal(details(alert).code, 'RATE_LIMITED');
  assert.deepEqual(sample(alert, 'ip'), ['203.0.113.13']);

  // Through the API: the second call within the window is answered 429 and raises the alert.
  const apiKey = await newKey(main, { rateLimit: { limit: 1, windowSeconds: 60 } });
  assert.equal((await callApi(main, apiKey.secret)).status, 200);
  const limited = await callApi(main, apiKey.secret);
  assert.equal(limited.status, 429);
  assert.deepEqual(errorCodes(limited), ['RATE_LIMITED']);
  await oneAlertFor(main, 'RATE_LIMITED', apiKey.id);

  const exact = await newKey(main, { rateLimit: { limit: 2, windowSeconds: 60 } });
  assert.equal((await verify(main, { key: exact.secret })).code, 'VALID');
  assert.equal((await verify(main, { key: exact.secret })).code, 'VALID');
  await quiesce(main);
  await noAlert(main, { types: ['RATE_LIMITED'], keyId: exact.id }, 'a key that used exactly its limit');
});

// ---------------------------------------------------------------------------------------------
// USAGE_SPIKE (its own server: 1-second buckets, 3 buckets of history, floor 50)

test('USAGE_SPIKE: before any history, the static floor (50 calls in a bucket) fires; 45 calls do not', async () => {
  const key = await newKey(spiky);
  const near = await newKey(spiky);
  // One call each first (a bucket of history below the floor's 3), so the burst below is served
  // from the key cache rather than 100 concurrent lookups.
  assert.ok((await verifyMany(spiky, [{ key: key.secret }, { key: near.secret }])).every((r) => r.code === 'VALID'));
  await nextBucket();
  const results = await verifyMany(spiky, [
    ...Array.from({ length: 60 }, () => ({ key: key.secret })),
    ...Array.from({ length: 40 }, () => ({ key: near.secret })),
  ]);
  assert.ok(results.every((r) => r.code === 'VALID'));
  const alert = await oneAlertFor(spiky, 'USAGE_SPIKE', key.id);
  assert.equal(alert.severity, 'MEDIUM');
  assert.equal(alert.key?.id, key.id);
  assert.equal(alert.user?.id, key.ownerId);
  const d = details(alert);
  assert.equal(d.threshold, 50);
  assert.equal(d.staticFloor, 50);
  assert.equal(d.baseline, null, 'no baseline before historyBuckets buckets');
  assert.equal(d.windowSeconds, 1);
  assert.equal(d.observed, 50, 'raised by the call that reached the floor');

  await nextBucket();
  assert.ok((await verifyMany(spiky, Array.from({ length: 5 }, () => ({ key: near.secret })))).every((r) => r.code === 'VALID'));
  await quiesce(spiky);
  await noAlert(spiky, { types: ['USAGE_SPIKE'], keyId: near.id }, '40 + 5 calls in separate buckets, floor 50');
});

test('USAGE_SPIKE: after history, the learned limit max(minCalls, mean*factor, mean+6σ) applies', async () => {
  const spiking = await newKey(spiky);
  const steady = await newKey(spiky);
  // Four buckets of 5 calls each: mean 5, no variance, so the limit is max(10, 20, 5) = 20.
  for (let bucket = 0; bucket < 4; bucket++) {
    await nextBucket();
    const results = await verifyMany(spiky, [
      ...Array.from({ length: 5 }, () => ({ key: spiking.secret })),
      ...Array.from({ length: 5 }, () => ({ key: steady.secret })),
    ]);
    assert.ok(results.every((r) => r.code === 'VALID'));
  }
  await nextBucket();
  await verifyMany(spiky, [
    ...Array.from({ length: 25 }, () => ({ key: spiking.secret })),
    // Above minCalls (10) but below mean*factor: no spike for a learned key.
    ...Array.from({ length: 15 }, () => ({ key: steady.secret })),
  ]);
  const alert = await oneAlertFor(spiky, 'USAGE_SPIKE', spiking.id);
  const d = details(alert);
  const baseline = d.baseline as { mean: number; stddev: number; buckets: number } | null;
  assert.ok(baseline, `a learned baseline: ${JSON.stringify(d)}`);
  assert.ok(baseline.buckets >= 3, `at least historyBuckets buckets learned: ${baseline.buckets}`);
  assert.ok(baseline.mean > 3 && baseline.mean <= 5.01, `mean near 5: ${baseline.mean}`);
  assert.equal(d.staticFloor, null);
  const expected = Math.ceil(Math.max(10, baseline.mean * 4, baseline.mean + 6 * baseline.stddev));
  assert.ok(Math.abs(Number(d.threshold) - expected) <= 1, `threshold ${String(d.threshold)} = max(minCalls, mean*4, mean+6σ) ≈ ${expected}`);
  assert.ok(Number(d.threshold) > 15 && Number(d.threshold) <= 25, `threshold ${String(d.threshold)} between the two keys' calls`);
  assert.ok(Number(d.observed) >= Number(d.threshold), 'observed reached the threshold');

  await quiesce(spiky);
  await noAlert(spiky, { types: ['USAGE_SPIKE'], keyId: steady.id }, '15 calls against a learned baseline of 5 (limit 20)');
});

// ---------------------------------------------------------------------------------------------
// NEW_SOURCE_IP

test('NEW_SOURCE_IP: a VALID use from a new /24 raises an alert; the first network and the same /24 do not', async () => {
  const key = await newKey(main);
  assert.equal((await verify(main, { key: key.secret, ip: '203.0.113.5' })).code, 'VALID');
  await networkRemembered(main, key.id, '203.0.113.0/24');
  assert.equal((await verify(main, { key: key.secret, ip: '203.0.113.77' })).code, 'VALID');
  await quiesce(main);
  await noAlert(main, { types: ['NEW_SOURCE_IP'], keyId: key.id }, 'first network, then another host of the same /24');

  assert.equal((await verify(main, { key: key.secret, ip: '198.51.100.20' })).code, 'VALID');
  const alert = await oneAlertFor(main, 'NEW_SOURCE_IP', key.id);
  assert.equal(alert.severity, 'MEDIUM');
  assert.equal(alert.key?.id, key.id);
  assert.equal(alert.user?.id, key.ownerId);
  const d = details(alert);
  assert.equal(d.observed, '198.51.100.20');
  assert.equal(d.network, '198.51.100.0/24');
  assert.deepEqual(d.knownNetworks, ['203.0.113.0/24']);
  assert.equal(d.learningSeconds, 0);
});

test('NEW_SOURCE_IP: IPv6 networks are /64s', async () => {
  const key = await newKey(main);
  assert.equal((await verify(main, { key: key.secret, ip: '2001:db8:1:2::5' })).code, 'VALID');
  await networkRemembered(main, key.id, '2001:db8:1:2::/64');
  assert.equal((await verify(main, { key: key.secret, ip: '2001:db8:1:2:ffff::1' })).code, 'VALID');
  await quiesce(main);
  await noAlert(main, { types: ['NEW_SOURCE_IP'], keyId: key.id }, 'another address of the same /64');

  assert.equal((await verify(main, { key: key.secret, ip: '2001:db8:9::1' })).code, 'VALID');
  const alert = await oneAlertFor(main, 'NEW_SOURCE_IP', key.id);
  const d = details(alert);
  assert.equal(d.observed, '2001:db8:9::1');
  assert.equal(d.network, '2001:db8:9::/64', 'written as PostgreSQL and the filters write it (RFC 5952)');
  assert.deepEqual(d.knownNetworks, ['2001:db8:1:2::/64']);
});

test('NEW_SOURCE_IP: API authentication from a new network (X-Forwarded-For behind a trusted proxy)', async () => {
  const key = await newKey(main);
  assert.equal((await callApi(main, key.secret, '192.0.2.1')).status, 200);
  await networkRemembered(main, key.id, '192.0.2.0/24');
  assert.equal((await callApi(main, key.secret, '198.18.0.1')).status, 200);
  const alert = await oneAlertFor(main, 'NEW_SOURCE_IP', key.id);
  assert.equal(details(alert).observed, '198.18.0.1');
  assert.deepEqual(details(alert).knownNetworks, ['192.0.2.0/24']);
});

test('NEW_SOURCE_IP: nothing while the key is inside its learning period; what it learned counts afterwards', async () => {
  // The spike server learns for 2 s.
  const key = await newKey(spiky);
  assert.equal((await verify(spiky, { key: key.secret, ip: '10.0.0.1' })).code, 'VALID');
  await networkRemembered(spiky, key.id, '10.0.0.0/24');
  assert.equal((await verify(spiky, { key: key.secret, ip: '10.1.0.1' })).code, 'VALID');
  await networkRemembered(spiky, key.id, '10.1.0.0/24');
  await quiesce(spiky);
  await noAlert(spiky, { types: ['NEW_SOURCE_IP'], keyId: key.id }, 'a second network inside the learning period');

  await sleep(2200);
  assert.equal((await verify(spiky, { key: key.secret, ip: '10.2.0.1' })).code, 'VALID');
  const alert = await oneAlertFor(spiky, 'NEW_SOURCE_IP', key.id);
  assert.equal(details(alert).network, '10.2.0.0/24');
  assert.deepEqual([...(details(alert).knownNetworks as string[])].sort(), ['10.0.0.0/24', '10.1.0.0/24']);
  assert.equal(details(alert).learningSeconds, 2);
});

// ---------------------------------------------------------------------------------------------
// QUOTA_LOW

test('QUOTA_LOW without refill: fires once when remaining reaches quotaLow.remaining (3); not above it', async () => {
  const key = await newKey(main, { remaining: 5 });
  const near = await newKey(main, { remaining: 10 });
  assert.equal((await verify(main, { key: key.secret })).remaining, 4);
  for (let i = 0; i < 3; i++) await verify(main, { key: near.secret });
  await quiesce(main);
  await noAlert(main, { types: ['QUOTA_LOW'], keyId: key.id }, '4 left, level 3');
  await noAlert(main, { types: ['QUOTA_LOW'], keyId: near.id }, '7 left, level 3');

  assert.equal((await verify(main, { key: key.secret })).remaining, 3);
  const alert = await oneAlertFor(main, 'QUOTA_LOW', key.id);
  assert.equal(alert.severity, 'LOW');
  assert.equal(alert.key?.id, key.id);
  assert.equal(alert.user?.id, key.ownerId);
  const d = details(alert);
  assert.equal(d.observed, 3);
  assert.equal(d.threshold, 3);
  assert.equal(d.refillAmount, null);

  // Further verifications below the level do not warn again.
  assert.equal((await verify(main, { key: key.secret })).remaining, 2);
  assert.equal((await verify(main, { key: key.secret })).remaining, 1);
  await quiesce(main);
  await sleep(1200);
  const again = await alerts(main, { types: ['QUOTA_LOW'], keyId: key.id });
  assert.equal(again.length, 1, 'one warning per key without refill');
  assert.equal(again[0]!.details?.repeats, 0, 'the warning is given once, not repeated');
});

test('QUOTA_LOW with refill: the level is ceil(refillAmount * fraction), warned once per refill period', async () => {
  // amount 20, fraction 0.1: level 2.
  const key = await newKey(main, { remaining: 20, refill: { amount: 20, intervalSeconds: 3600 } });
  const results = await verifyMany(main, Array.from({ length: 17 }, () => ({ key: key.secret })));
  assert.ok(results.every((r) => r.code === 'VALID'));
  await quiesce(main);
  await noAlert(main, { types: ['QUOTA_LOW'], keyId: key.id }, '3 left, level 2');
  assert.equal((await verify(main, { key: key.secret })).remaining, 2);
  const alert = await oneAlertFor(main, 'QUOTA_LOW', key.id);
  assert.equal(details(alert).observed, 2);
  assert.equal(details(alert).threshold, 2);
  assert.equal(details(alert).refillAmount, 20);
  assert.equal(details(alert).refillIntervalSeconds, 3600);

  // A refill every 3 s: the warning comes back in the next period, not before.
  const refilling = await newKey(main, { remaining: 10, refill: { amount: 10, intervalSeconds: 3 } });
  const created = Date.now();
  const first = await verifyMany(main, Array.from({ length: 9 }, () => ({ key: refilling.secret })));
  assert.deepEqual(first.map((r) => r.remaining).sort((a, b) => Number(a) - Number(b)), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal((await verify(main, { key: refilling.secret })).remaining, 0);
  assert.ok(Date.now() - created < 2500, 'the first period was used up inside the period');
  await oneAlertFor(main, 'QUOTA_LOW', refilling.id);
  await quiesce(main);
  assert.equal((await alerts(main, { types: ['QUOTA_LOW'], keyId: refilling.id })).length, 1, 'same period: no second warning');

  await sleep(Math.max(0, created + 3300 - Date.now()));
  // The refill is applied by one verification first (concurrent verifications racing a due refill
  // are a separate matter), then the rest of the period's quota in one batch.
  assert.equal((await verify(main, { key: refilling.secret })).remaining, 9, 'refilled to 10, one taken');
  const second = await verifyMany(main, Array.from({ length: 8 }, () => ({ key: refilling.secret })));
  assert.ok(second.every((r) => r.code === 'VALID'), `refilled: ${JSON.stringify(second)}`);
  const both = await waitForAlerts(main, { types: ['QUOTA_LOW'], keyId: refilling.id }, (n) => n.length === 2, 'a warning in the next refill period');
  assert.ok(both.every((a) => a.details?.threshold === 1));
});

test('QUOTA_LOW during a rotation grace: one quota, one warning, naming the successor; the retired key raises no KEY_EXPIRING', async () => {
  const key = await newKey(main, { remaining: 8 });
  const rotated = await main.ok(main.adminKey, AlRotateKeyDocument, { id: key.id, gracePeriodSeconds: 3600 });
  const successor = { id: rotated.rotateApiKey.apiKey.id, secret: rotated.rotateApiKey.secret };
  // Alternating old and new key down through the level (3): 7, 6, 5, 4, 3, 2, 1 left of one quota.
  const left: Array<number | null | undefined> = [];
  for (let i = 0; i < 7; i++) left.push((await verify(main, { key: (i % 2 === 0 ? key : successor).secret })).remaining);
  assert.deepEqual(left, [7, 6, 5, 4, 3, 2, 1]);
  const alert = await oneAlertFor(main, 'QUOTA_LOW', successor.id);
  assert.equal(details(alert).observed, 3);
  await quiesce(main);
  await sleep(1200); // a KEY_EXPIRING scan (every second) has passed since the rotation
  await noAlert(main, { types: ['QUOTA_LOW'], keyId: key.id }, 'the old key draws on the successor\'s quota: no second warning');
  await noAlert(main, { types: ['KEY_EXPIRING'], keyId: key.id }, 'a key retired by rotation expires when its grace ends, by choice');
});

// ---------------------------------------------------------------------------------------------
// KEY_EXPIRING (scanned every second on the main server, 7 days ahead)

test('KEY_EXPIRING: active keys expiring within the horizon are alerted once; after the horizon they are not', async () => {
  const owner = await createHuman(main, [], 'expiring-owner');
  const inTwoDays = new Date(Date.now() + 2 * 86_400_000).toISOString();
  const inTwoHours = new Date(Date.now() + 2 * 3_600_000).toISOString();
  const inEightDays = new Date(Date.now() + 8 * 86_400_000).toISOString();
  const soon = await newKey(main, { ownerId: owner, expiresAt: inTwoDays });
  const sooner = await newKey(main, { ownerId: owner, expiresAt: inTwoHours });
  const later = await newKey(main, { ownerId: owner, expiresAt: inEightDays });

  const alert = await oneAlertFor(main, 'KEY_EXPIRING', soon.id);
  assert.equal(alert.severity, 'LOW', 'two days ahead');
  assert.equal(alert.key?.id, soon.id);
  assert.equal(alert.user?.id, owner);
  const d = details(alert);
  assert.equal(new Date(String(d.expiresAt)).getTime(), new Date(inTwoDays).getTime());
  assert.equal(d.daysAhead, 7);
  assert.ok(Math.abs(Number(d.secondsLeft) - 2 * 86_400) < 60, `secondsLeft ${String(d.secondsLeft)}`);

  const urgent = await oneAlertFor(main, 'KEY_EXPIRING', sooner.id);
  assert.equal(urgent.severity, 'MEDIUM', 'less than a day ahead is more urgent');
  const imminent = await newKey(main, { ownerId: owner, expiresAt: new Date(Date.now() + 20_000).toISOString() });
  const left = Number(details(await oneAlertFor(main, 'KEY_EXPIRING', imminent.id)).secondsLeft);
  assert.ok(left > 0 && left <= 20, `secondsLeft ${left}: the time that is really left`);

  // More scans pass: still one alert per key, none for the key after the horizon.
  await sleep(2200);
  assert.equal((await alerts(main, { types: ['KEY_EXPIRING'], keyId: soon.id })).length, 1, 'later scans fold into the open alert');
  await noAlert(main, { types: ['KEY_EXPIRING'], keyId: later.id }, 'a key expiring in 8 days with a 7-day horizon');
});

// ---------------------------------------------------------------------------------------------
// DENIED_ACTION_BURST

test('DENIED_ACTION_BURST: 5 FORBIDDEN answers to one principal raise a HIGH alert; 4 do not', async () => {
  const memberRole = await roleIdByName(main, 'member');
  const prober = await createPrincipal(main, { roleIds: [memberRole], label: 'prober' });
  const near = await createPrincipal(main, { roleIds: [memberRole], label: 'near-prober' });
  const deny = async (p: TestPrincipal, operation: 'users' | 'alertRules') => {
    const response = operation === 'users' ? await main.request(p.key, AlUsersDocument) : await main.request(p.key, AlAlertRulesDocument);
    assert.deepEqual(errorCodes(response), ['FORBIDDEN']);
  };
  for (let i = 0; i < 3; i++) await deny(prober, 'users');
  for (let i = 0; i < 2; i++) await deny(prober, 'alertRules');
  for (let i = 0; i < 4; i++) await deny(near, 'users');

  const alert = await oneAlertFor(main, 'DENIED_ACTION_BURST', prober.keyId);
  assert.equal(alert.severity, 'HIGH');
  assert.equal(alert.key?.id, prober.keyId);
  assert.equal(alert.user?.id, prober.userId);
  const d = details(alert);
  assert.equal(d.threshold, 5);
  assert.equal(d.observed, 5);
  assert.equal(d.windowSeconds, 60);
  assert.deepEqual([...(sample(alert, 'operation') as string[])].sort(), ['Query.alertRules', 'Query.users']);
  assert.deepEqual(sample(alert, 'keyId'), [prober.keyId]);

  await quiesce(main);
  await noAlert(main, { types: ['DENIED_ACTION_BURST'], keyId: near.keyId }, '4 denials with threshold 5');
  await noAlert(main, { types: ['DENIED_ACTION_BURST'], userId: near.userId }, '4 denials with threshold 5');
});

test('DENIED_ACTION_BURST: five aliases refused in one request count five times, in one authz.denied event', async () => {
  const prober = await createPrincipal(main, { roleIds: [await roleIdByName(main, 'member')], label: 'alias-prober' });
  // user(id:) is nullable, so every alias is answered (a refused non-null root field would end the request).
  const other = (await viewerOf(main, main.adminKey)).userId;
  const aliases = Array.from({ length: 5 }, (_, i) => `u${i}: user(id: "${other}") { id }`).join(' ');
  const response = await postGraphQL(main.url, prober.key, `{ ${aliases} }`);
  assert.deepEqual(errorCodes(response), Array(5).fill('FORBIDDEN'));

  const alert = await oneAlertFor(main, 'DENIED_ACTION_BURST', prober.keyId);
  assert.equal(details(alert).observed, 5);
  const events = (await auditOf(main, { actions: ['authz.denied'] })).filter((e) => e.actorKey?.id === prober.keyId);
  assert.equal(events.length, 1, 'one event for the request, not one per alias');
  const d = events[0]!.details as { operation: string; attempts: number; paths: string[][] };
  assert.equal(d.operation, 'Query.user');
  assert.equal(d.attempts, 5);
  assert.deepEqual(d.paths.map((path) => path[0]).sort(), ['u0', 'u1', 'u2', 'u3', 'u4']);
});

test('DENIED_ACTION_BURST: one list whose rows each meet the same refusal is one attempt, not one per row', async () => {
  const reader = await principalWithPermissions(main, ['audit:read'], 'row-reader');
  const response = await postGraphQL<{ auditEvents: { nodes: unknown[] } }>(main.url, reader.key, '{ auditEvents(first: 20, filter: { actions: ["key.create"] }) { nodes { actorKey { name } } } }');
  const refusals = errorCodes(response).length;
  assert.ok(refusals >= 5, `several rows refused (${refusals})`);
  await quiesce(main);
  await noAlert(main, { types: ['DENIED_ACTION_BURST'], keyId: reader.keyId }, 'one request, one list');
  const events = (await auditOf(main, { actions: ['authz.denied'] })).filter((e) => e.actorKey?.id === reader.keyId);
  assert.equal(events.length, 1);
  assert.equal((events[0]!.details as { attempts?: number }).attempts, undefined, 'a single attempt');
});

// ---------------------------------------------------------------------------------------------
// THRESHOLD (administrator-defined rules)

test('THRESHOLD: a VERIFY_CALLS rule on one key fires at N calls (with the rule linked); N-1 calls do not', async () => {
  const key = await newKey(main);
  const near = await newKey(main);
  const rule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 3, keyId: key.id, severity: 'CRITICAL' });
  const nearRule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 3, keyId: near.id });
  for (let i = 0; i < 3; i++) await verify(main, { key: key.secret, ip: '203.0.113.30' });
  for (let i = 0; i < 2; i++) await verify(main, { key: near.secret });

  const alert = await oneAlertFor(main, 'THRESHOLD', key.id);
  assert.equal(alert.severity, 'CRITICAL', "the rule's severity");
  assert.equal(alert.rule?.id, rule.id);
  assert.equal(alert.rule?.name, rule.name);
  assert.equal(alert.key?.id, key.id);
  const d = details(alert);
  assert.equal(d.metric, 'VERIFY_CALLS');
  assert.equal(d.threshold, 3);
  assert.equal(d.windowSeconds, 60);
  assert.equal(d.observed, 3);
  assert.deepEqual(sample(alert, 'keyId'), [key.id]);
  assert.deepEqual(sample(alert, 'ip'), ['203.0.113.30']);

  await quiesce(main);
  await noAlert(main, { types: ['THRESHOLD'], keyId: near.id }, `rule ${nearRule.id}: 2 calls with threshold 3`);
});

test('THRESHOLD: only hits inside the rule window count', async () => {
  const key = await newKey(main);
  const rule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 2, windowSeconds: 1, keyId: key.id });
  // The evidence tells which calls the alert counted: had the first (outside the window) counted,
  // the alert would have been raised by the second call, with 203.0.113.41 in its sample.
  await verify(main, { key: key.secret, ip: '203.0.113.41' });
  await sleep(1200);
  await verify(main, { key: key.secret, ip: '203.0.113.42' });
  await verify(main, { key: key.secret, ip: '203.0.113.43' });
  const alert = await oneAlertFor(main, 'THRESHOLD', key.id);
  assert.equal(alert.rule?.id, rule.id);
  assert.equal(details(alert).windowSeconds, 1);
  assert.equal(details(alert).observed, 2);
  assert.deepEqual(sample(alert, 'ip'), ['203.0.113.42', '203.0.113.43']);
});

test('THRESHOLD: a VERIFY_FAILURES rule on one user counts all of its keys', async () => {
  const owner = await createHuman(main, [], 'rule-user');
  const a = await newKey(main, { ownerId: owner });
  const b = await newKey(main, { ownerId: owner });
  await disable(main, a);
  await disable(main, b);
  const nearOwner = await createHuman(main, [], 'rule-user-near');
  const c = await newKey(main, { ownerId: nearOwner });
  await disable(main, c);
  const rule = await createRule(main, { metric: 'VERIFY_FAILURES', threshold: 3, userId: owner, severity: 'HIGH' });
  await createRule(main, { metric: 'VERIFY_FAILURES', threshold: 3, userId: nearOwner });
  // A VALID call is not a failure.
  const valid = await newKey(main, { ownerId: owner });
  assert.equal((await verify(main, { key: valid.secret })).code, 'VALID');
  await verifyMany(main, [{ key: a.secret }, { key: a.secret }, { key: c.secret }, { key: c.secret }]);
  await quiesce(main);
  await noAlert(main, { types: ['THRESHOLD'], userId: owner }, '2 failures and 1 valid call with threshold 3');

  assert.equal((await verify(main, { key: b.secret })).code, 'DISABLED');
  const nodes = await waitForAlerts(main, { types: ['THRESHOLD'], userId: owner }, (n) => n.length > 0, 'user-scoped rule');
  assert.equal(nodes.length, 1);
  const alert = nodes[0]!;
  assert.equal(alert.rule?.id, rule.id);
  assert.equal(alert.user?.id, owner);
  assert.equal(alert.severity, 'HIGH');
  assert.equal(details(alert).observed, 3);
  assert.deepEqual(details(alert).codes, { DISABLED: 3 });
  assert.deepEqual([...(sample(alert, 'keyId') as string[])].sort(), [a.id, b.id].sort());
  await noAlert(main, { types: ['THRESHOLD'], userId: nearOwner }, 'another user with 2 failures');
});

test('THRESHOLD: AUTH_FAILURES, DENIED_ACTIONS and RATE_LIMITED rules', async () => {
  // AUTH_FAILURES: a rejected key presented to the API, 3 times (threshold 3); another 2 times.
  const rejected = await newKey(main);
  await disable(main, rejected);
  const rejectedNear = await newKey(main);
  await disable(main, rejectedNear);
  const authRule = await createRule(main, { metric: 'AUTH_FAILURES', threshold: 3, keyId: rejected.id });
  await createRule(main, { metric: 'AUTH_FAILURES', threshold: 3, keyId: rejectedNear.id });
  for (let i = 0; i < 3; i++) assert.equal((await callApi(main, rejected.secret, '192.0.2.80')).status, 401);
  for (let i = 0; i < 2; i++) assert.equal((await callApi(main, rejectedNear.secret, '192.0.2.81')).status, 401);
  const authAlert = await oneAlertFor(main, 'THRESHOLD', rejected.id);
  assert.equal(authAlert.rule?.id, authRule.id);
  assert.equal(details(authAlert).metric, 'AUTH_FAILURES');
  assert.equal(details(authAlert).observed, 3);
  assert.deepEqual(details(authAlert).codes, { DISABLED: 3 });

  // DENIED_ACTIONS on a user: 3 denials (threshold 3, below the burst detector's 5).
  const memberRole = await roleIdByName(main, 'member');
  const denied = await createPrincipal(main, { roleIds: [memberRole], label: 'denied' });
  const deniedNear = await createPrincipal(main, { roleIds: [memberRole], label: 'denied-near' });
  const deniedRule = await createRule(main, { metric: 'DENIED_ACTIONS', threshold: 3, userId: denied.userId, severity: 'LOW' });
  await createRule(main, { metric: 'DENIED_ACTIONS', threshold: 3, userId: deniedNear.userId });
  for (let i = 0; i < 3; i++) assert.deepEqual(errorCodes(await main.request(denied.key, AlUsersDocument)), ['FORBIDDEN']);
  for (let i = 0; i < 2; i++) assert.deepEqual(errorCodes(await main.request(deniedNear.key, AlUsersDocument)), ['FORBIDDEN']);
  const deniedAlerts = await waitForAlerts(main, { types: ['THRESHOLD'], userId: denied.userId }, (n) => n.length > 0, 'DENIED_ACTIONS rule');
  assert.equal(deniedAlerts.length, 1);
  assert.equal(deniedAlerts[0]!.rule?.id, deniedRule.id);
  assert.equal(deniedAlerts[0]!.severity, 'LOW');
  assert.equal(details(deniedAlerts[0]!).observed, 3);
  assert.deepEqual(sample(deniedAlerts[0]!, 'operation'), ['Query.users']);

  // RATE_LIMITED on a key: limit 1, 3 calls = 2 refusals (threshold 2).
  const limited = await newKey(main, { rateLimit: { limit: 1, windowSeconds: 60 } });
  const limitedNear = await newKey(main, { rateLimit: { limit: 1, windowSeconds: 60 } });
  const limitRule = await createRule(main, { metric: 'RATE_LIMITED', threshold: 2, keyId: limited.id });
  await createRule(main, { metric: 'RATE_LIMITED', threshold: 2, keyId: limitedNear.id });
  for (let i = 0; i < 3; i++) await verify(main, { key: limited.secret });
  for (let i = 0; i < 2; i++) await verify(main, { key: limitedNear.secret });
  const limitAlert = await oneAlertFor(main, 'THRESHOLD', limited.id);
  assert.equal(limitAlert.rule?.id, limitRule.id);
  assert.equal(details(limitAlert).observed, 2);
  assert.deepEqual(details(limitAlert).codes, { RATE_LIMITED: 2 });

  await quiesce(main);
  await noAlert(main, { types: ['THRESHOLD'], keyId: rejectedNear.id }, '2 authentication failures with threshold 3');
  await noAlert(main, { types: ['THRESHOLD'], userId: deniedNear.userId }, '2 denials with threshold 3');
  await noAlert(main, { types: ['THRESHOLD'], keyId: limitedNear.id }, '1 rate-limit refusal with threshold 2');
});

test('THRESHOLD: a global rule (no key, no user) counts every key', async () => {
  // On the spike server, where no other test is running meanwhile: a global rule counts
  // everything that happens after its creation. It is deleted afterwards.
  const s = spiky;
  const a = await newKey(s);
  const b = await newKey(s);
  await disable(s, a);
  await disable(s, b);
  const rule = await createRule(s, { metric: 'VERIFY_FAILURES', threshold: 4, severity: 'HIGH' });
  // A barrier that is not a failure: a key-scoped VERIFY_CALLS rule with threshold 1.
  const marker = await newKey(s);
  const markerRule = await createRule(s, { metric: 'VERIFY_CALLS', threshold: 1, keyId: marker.id });
  try {
    assert.equal(rule.keyId, null);
    assert.equal(rule.userId, null);
    await verifyMany(s, [{ key: a.secret }, { key: a.secret }, { key: b.secret }]);
    assert.equal((await verify(s, { key: marker.secret })).code, 'VALID');
    await waitForAlerts(s, { types: ['THRESHOLD'], keyId: marker.id }, (n) => n.length === 1, 'marker rule');
    await sleep(300);
    const early = (await alerts(s, { types: ['THRESHOLD'] })).filter((x) => x.rule?.id === rule.id);
    assert.deepEqual(early, [], '3 failures with threshold 4');

    assert.equal((await verify(s, { key: generateKey('kl') })).code, 'NOT_FOUND');
    const nodes = await waitForAlerts(s, { types: ['THRESHOLD'] }, (n) => n.some((x) => x.rule?.id === rule.id), 'global rule');
    const alert = nodes.find((x) => x.rule?.id === rule.id)!;
    assert.equal(alert.key, null);
    assert.equal(alert.user, null);
    assert.equal(alert.severity, 'HIGH');
    assert.equal(details(alert).observed, 4);
    assert.deepEqual(details(alert).codes, { DISABLED: 3, NOT_FOUND: 1 });
  } finally {
    await s.ok(s.adminKey, AlDeleteRuleDocument, { id: rule.id });
    await s.ok(s.adminKey, AlDeleteRuleDocument, { id: markerRule.id });
  }
});

// ---------------------------------------------------------------------------------------------
// Rules: validation, update, delete, audit

test('createAlertRule: invalid inputs are BAD_USER_INPUT naming the field, and create nothing', async () => {
  const key = await newKey(main);
  const userId = await createHuman(main, [], 'rule-scope');
  const before = (await main.ok(main.adminKey, AlAlertRulesDocument)).alertRules.length;
  const base = { name: unique('bad-rule'), metric: 'VERIFY_CALLS' as const, threshold: 5, windowSeconds: 60, severity: 'LOW' as const };
  const cases: Array<[Partial<CreateAlertRuleInput>, string]> = [
    [{ threshold: 0 }, 'input.threshold'],
    [{ threshold: -3 }, 'input.threshold'],
    [{ windowSeconds: 0 }, 'input.windowSeconds'],
    [{ windowSeconds: -60 }, 'input.windowSeconds'],
    [{ keyId: key.id, userId }, 'input.keyId'],
    [{ keyId: '00000000-0000-4000-8000-000000000000' }, 'input.keyId'],
    [{ keyId: 'not-a-key-id' }, 'input.keyId'],
    [{ userId: '00000000-0000-4000-8000-000000000000' }, 'input.userId'],
    [{ userId: key.id }, 'input.userId'],
    [{ name: '' }, 'input.name'],
  ];
  for (const [change, field] of cases) {
    const response = await main.request(main.adminKey, AlCreateRuleDocument, { input: { ...base, ...change } });
    expectBadInput(response, field);
  }
  assert.equal((await main.ok(main.adminKey, AlAlertRulesDocument)).alertRules.length, before, 'no rule was created');
  const events = await auditOf(main, { actions: ['alert_rule.create'] });
  assert.ok(events.every((e) => (e.details?.after as { name?: string } | undefined)?.name !== base.name), 'nothing audited');

  // The valid scopes are accepted.
  const byKey = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 1_000_000, keyId: key.id });
  assert.equal(byKey.keyId, key.id);
  assert.equal(byKey.userId, null);
  assert.equal(byKey.enabled, true);
  const byUser = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 1_000_000, userId });
  assert.equal(byUser.userId, userId);
});

test('updateAlertRule: disabling stops a rule firing, re-enabling restores it; invalid updates are refused', async () => {
  const key = await newKey(main);
  const rule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 2, keyId: key.id });
  const disabled = await main.ok(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input: { enabled: false } });
  assert.equal(disabled.updateAlertRule.enabled, false);
  assert.equal(disabled.updateAlertRule.threshold, 2, 'other fields unchanged');
  for (let i = 0; i < 3; i++) await verify(main, { key: key.secret });
  await quiesce(main);
  await noAlert(main, { types: ['THRESHOLD'], keyId: key.id }, 'a disabled rule');

  await main.ok(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input: { enabled: true } });
  for (let i = 0; i < 2; i++) await verify(main, { key: key.secret });
  const alert = await oneAlertFor(main, 'THRESHOLD', key.id);
  assert.equal(alert.rule?.id, rule.id);

  for (const [input, field] of [
    [{ threshold: 0 }, 'input.threshold'],
    [{ windowSeconds: -1 }, 'input.windowSeconds'],
    [{ name: '' }, 'input.name'],
  ] as const) {
    expectBadInput(await main.request(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input }), field);
  }
  expectError(await main.request(main.adminKey, AlUpdateRuleDocument, { id: '00000000-0000-4000-8000-000000000000', input: { threshold: 3 } }), 'NOT_FOUND');
  expectError(await main.request(main.adminKey, AlUpdateRuleDocument, { id: 'nope', input: { threshold: 3 } }), 'NOT_FOUND');
  const listed = (await main.ok(main.adminKey, AlAlertRulesDocument)).alertRules.find((r) => r.id === rule.id);
  assert.equal(listed?.threshold, 2, 'refused updates changed nothing');
  assert.equal(listed?.enabled, true);
});

test('updateAlertRule: a raised threshold (and other fields) take effect at once', async () => {
  const key = await newKey(main);
  const rule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 2, keyId: key.id, severity: 'LOW' });
  const name = unique('renamed-rule');
  const updated = (
    await main.ok(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input: { threshold: 4, name, severity: 'HIGH', windowSeconds: 120 } })
  ).updateAlertRule;
  assert.deepEqual(
    { name: updated.name, threshold: updated.threshold, severity: updated.severity, windowSeconds: updated.windowSeconds, keyId: updated.keyId },
    { name, threshold: 4, severity: 'HIGH', windowSeconds: 120, keyId: key.id },
  );
  const listed = (await main.ok(main.adminKey, AlAlertRulesDocument)).alertRules.find((r) => r.id === rule.id);
  assert.equal(listed?.threshold, 4);
  assert.equal(listed?.name, name);

  for (let i = 0; i < 3; i++) await verify(main, { key: key.secret });
  await quiesce(main);
  await noAlert(main, { types: ['THRESHOLD'], keyId: key.id }, '3 calls after the threshold was raised from 2 to 4');
  await verify(main, { key: key.secret });
  const alert = await oneAlertFor(main, 'THRESHOLD', key.id);
  assert.equal(alert.severity, 'HIGH', 'the updated severity');
  assert.equal(details(alert).threshold, 4);
  assert.equal(details(alert).windowSeconds, 120);
  assert.equal(alert.rule?.threshold, 4);
});

test('deleteAlertRule: the rule is gone (NOT_FOUND after), stops firing, and its alerts remain without it', async () => {
  const key = await newKey(main);
  const rule = await createRule(main, { metric: 'VERIFY_CALLS', threshold: 1, keyId: key.id });
  await verify(main, { key: key.secret });
  const alert = await oneAlertFor(main, 'THRESHOLD', key.id);
  assert.equal(alert.rule?.id, rule.id);
  // A repeat while the rule exists is counted into the open alert...
  await verify(main, { key: key.secret });
  await waitForRepeats(main, alert.id, { keyId: key.id, types: ['THRESHOLD'] }, 1);

  assert.equal((await main.ok(main.adminKey, AlDeleteRuleDocument, { id: rule.id })).deleteAlertRule, true);
  assert.ok(!(await main.ok(main.adminKey, AlAlertRulesDocument)).alertRules.some((r) => r.id === rule.id), 'no longer listed');
  expectError(await main.request(main.adminKey, AlDeleteRuleDocument, { id: rule.id }), 'NOT_FOUND');
  expectError(await main.request(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input: { threshold: 5 } }), 'NOT_FOUND');
  expectError(await main.request(main.adminKey, AlDeleteRuleDocument, { id: 'nope' }), 'NOT_FOUND');

  // ...after the delete, nothing counts any more.
  for (let i = 0; i < 3; i++) await verify(main, { key: key.secret });
  await quiesce(main);
  await sleep(1200);
  const after = await alerts(main, { types: ['THRESHOLD'], keyId: key.id });
  assert.equal(after.length, 1, 'the alert outlives its rule');
  assert.equal(after[0]!.id, alert.id);
  assert.equal(after[0]!.details?.repeats, 1, 'a deleted rule no longer counts');
  assert.equal(after[0]!.rule, null, 'the link to a deleted rule reads as null');
});

test('alert_rule.create / update / delete are audited with the caller and before/after', async () => {
  const rule = await createRule(main, { metric: 'DENIED_ACTIONS', threshold: 1_000_000, severity: 'INFO' });
  await main.ok(main.adminKey, AlUpdateRuleDocument, { id: rule.id, input: { threshold: 2_000_000 } });
  await main.ok(main.adminKey, AlDeleteRuleDocument, { id: rule.id });
  const events = await auditOf(main, { actions: ['alert_rule.*'], targetId: rule.id });
  assert.deepEqual(events.map((e) => e.action), ['alert_rule.create', 'alert_rule.update', 'alert_rule.delete']);
  for (const event of events) {
    assert.equal(event.outcome, 'SUCCESS');
    assert.equal(event.actorType, 'USER');
    assert.equal(event.actor?.id, admin.userId);
    assert.equal(event.actorKey?.id, admin.keyId);
    assert.equal(event.targetType, 'alert_rule');
    assert.equal(event.targetId, rule.id);
  }
  const [created, updated, deleted] = events as [(typeof events)[number], (typeof events)[number], (typeof events)[number]];
  assert.equal((created.details?.after as Details).threshold, 1_000_000);
  assert.equal((created.details?.after as Details).name, rule.name);
  assert.equal((updated.details?.before as Details).threshold, 1_000_000);
  assert.equal((updated.details?.after as Details).threshold, 2_000_000);
  assert.equal((deleted.details?.before as Details).threshold, 2_000_000);
});

// ---------------------------------------------------------------------------------------------
// Deduplication

test('deduplication: the same cause folds into one alert whose details.repeats grows', async () => {
  const key = await newKey(main);
  await revoke(main, key);
  for (let i = 0; i < 4; i++) assert.equal((await verify(main, { key: key.secret })).code, 'REVOKED');
  const alert = await oneAlertFor(main, 'REVOKED_KEY_USED', key.id);
  const repeated = await waitForRepeats(main, alert.id, { keyId: key.id, types: ['REVOKED_KEY_USED'] }, 3);
  assert.equal(repeated.details?.repeats, 3, 'three repeats after the first presentation');
  assert.ok(Date.parse(String(repeated.details?.lastSeenAt)) >= Date.parse(repeated.createdAt), 'lastSeenAt moves on');

  await verify(main, { key: key.secret });
  await waitForRepeats(main, alert.id, { keyId: key.id, types: ['REVOKED_KEY_USED'] }, 4);
  assert.equal((await alerts(main, { types: ['REVOKED_KEY_USED'], keyId: key.id })).length, 1, 'still one alert');

  // Acknowledged is still unresolved: repeats keep folding in.
  await main.ok(main.adminKey, AlAcknowledgeDocument, { id: alert.id });
  await verify(main, { key: key.secret });
  const acked = await waitForRepeats(main, alert.id, { keyId: key.id, types: ['REVOKED_KEY_USED'] }, 5);
  assert.equal(acked.status, 'ACKNOWLEDGED');
  assert.equal((await alerts(main, { types: ['REVOKED_KEY_USED'], keyId: key.id })).length, 1);
});

test('deduplication: after resolveAlert, the next occurrence opens a new alert', async () => {
  const key = await newKey(main);
  await revoke(main, key);
  await verify(main, { key: key.secret });
  const first = await oneAlertFor(main, 'REVOKED_KEY_USED', key.id);
  assert.equal((await main.ok(main.adminKey, AlResolveDocument, { id: first.id })).resolveAlert.status, 'RESOLVED');

  // One presentation after the resolution: a fresh incident.
  assert.equal((await verify(main, { key: key.secret, ip: '203.0.113.99' })).code, 'REVOKED');
  const nodes = await waitForAlerts(
    main,
    { types: ['REVOKED_KEY_USED'], keyId: key.id, status: 'OPEN' },
    (n) => n.length === 1,
    'a new OPEN alert after the first was resolved',
  );
  assert.notEqual(nodes[0]!.id, first.id);
  assert.deepEqual(sample(nodes[0]!, 'ip'), ['203.0.113.99']);
  assert.equal(nodes[0]!.details?.repeats, 0);
  const resolved = await alerts(main, { types: ['REVOKED_KEY_USED'], keyId: key.id, status: 'RESOLVED' });
  assert.deepEqual(resolved.map((a) => a.id), [first.id]);
  assert.equal(resolved[0]!.details?.repeats, 0, 'the resolved alert took no repeats');
});

test('deduplication: different keys and different types are different alerts', async () => {
  const a = await newKey(main);
  const b = await newKey(main);
  await revoke(main, a);
  await revoke(main, b);
  await verifyMany(main, [{ key: a.secret }, { key: b.secret }]);
  const alertA = await oneAlertFor(main, 'REVOKED_KEY_USED', a.id);
  const alertB = await oneAlertFor(main, 'REVOKED_KEY_USED', b.id);
  assert.notEqual(alertA.id, alertB.id);
});

// ---------------------------------------------------------------------------------------------
// Handling: acknowledge / resolve

test('acknowledgeAlert and resolveAlert: OPEN → ACKNOWLEDGED → RESOLVED, CONFLICT otherwise, NOT_FOUND for unknown ids, audited', async () => {
  const key = await newKey(main);
  const direct = await newKey(main);
  await revoke(main, key);
  await revoke(main, direct);
  await verifyMany(main, [{ key: key.secret }, { key: direct.secret }]);
  const alert = await oneAlertFor(main, 'REVOKED_KEY_USED', key.id);
  const other = await oneAlertFor(main, 'REVOKED_KEY_USED', direct.id);
  assert.equal(alert.acknowledgedAt, null);
  assert.equal(alert.resolvedAt, null);

  const acked = (await main.ok(main.adminKey, AlAcknowledgeDocument, { id: alert.id })).acknowledgeAlert;
  assert.equal(acked.id, alert.id);
  assert.equal(acked.status, 'ACKNOWLEDGED');
  assert.ok(acked.acknowledgedAt && Math.abs(Date.parse(acked.acknowledgedAt) - Date.now()) < 60_000);
  assert.equal(acked.acknowledgedBy?.id, admin.userId);
  assert.equal(acked.resolvedAt, null);
  firstErrorWithCode(await main.request(main.adminKey, AlAcknowledgeDocument, { id: alert.id }), 'CONFLICT');

  const resolved = (await main.ok(main.adminKey, AlResolveDocument, { id: alert.id })).resolveAlert;
  assert.equal(resolved.status, 'RESOLVED');
  assert.ok(resolved.resolvedAt);
  assert.equal(resolved.acknowledgedAt, acked.acknowledgedAt, 'acknowledgement kept');
  firstErrorWithCode(await main.request(main.adminKey, AlResolveDocument, { id: alert.id }), 'CONFLICT');
  firstErrorWithCode(await main.request(main.adminKey, AlAcknowledgeDocument, { id: alert.id }), 'CONFLICT');

  // An OPEN alert may be resolved directly.
  const direct1 = (await main.ok(main.adminKey, AlResolveDocument, { id: other.id })).resolveAlert;
  assert.equal(direct1.status, 'RESOLVED');
  assert.equal(direct1.acknowledgedAt, null);

  for (const id of ['00000000-0000-4000-8000-000000000000', 'not-an-id']) {
    expectError(await main.request(main.adminKey, AlAcknowledgeDocument, { id }), 'NOT_FOUND');
    expectError(await main.request(main.adminKey, AlResolveDocument, { id }), 'NOT_FOUND');
  }

  const stored = (await alerts(main, { keyId: key.id, types: ['REVOKED_KEY_USED'] }))[0]!;
  assert.equal(stored.status, 'RESOLVED');
  assert.equal(stored.acknowledgedBy?.id, admin.userId);

  // Audit: one event per successful transition, none for the refused ones.
  const events = await auditOf(main, { actions: ['alert.acknowledge', 'alert.resolve'], targetId: alert.id });
  assert.deepEqual(events.map((e) => e.action), ['alert.acknowledge', 'alert.resolve']);
  for (const event of events) {
    assert.equal(event.outcome, 'SUCCESS');
    assert.equal(event.actorType, 'USER');
    assert.equal(event.actor?.id, admin.userId);
    assert.equal(event.actorKey?.id, admin.keyId);
    assert.equal(event.targetType, 'alert');
  }
  assert.deepEqual([events[0]!.details?.before, events[0]!.details?.after], ['OPEN', 'ACKNOWLEDGED']);
  assert.deepEqual([events[1]!.details?.before, events[1]!.details?.after], ['ACKNOWLEDGED', 'RESOLVED']);
  const directEvents = await auditOf(main, { actions: ['alert.acknowledge', 'alert.resolve'], targetId: other.id });
  assert.deepEqual(directEvents.map((e) => [e.action, e.details?.before, e.details?.after]), [['alert.resolve', 'OPEN', 'RESOLVED']]);
});

test('a custom role with only alerts:read and alerts:write handles alerts; links it may not read are null', async () => {
  const handler = await principalWithPermissions(main, ['alerts:read', 'alerts:write'], 'alert-handler');
  const key = await newKey(main);
  await revoke(main, key);
  await verify(main, { key: key.secret });
  const asAdmin = await oneAlertFor(main, 'REVOKED_KEY_USED', key.id);

  const seen = (await main.ok(handler.key, AlAlertsDocument, { filter: { keyId: key.id }, first: 10 })).alerts;
  assert.equal(seen.totalCount, 1);
  const alert = seen.nodes[0]!;
  assert.equal(alert.id, asAdmin.id);
  assert.equal(alert.key, null, "another user's key needs keys:read");
  assert.equal(alert.user, null, 'another user needs users:read');
  assert.equal(alert.details?.code, 'REVOKED', 'the alert itself is readable');

  const acked = await main.request(handler.key, AlAcknowledgeDocument, { id: alert.id });
  assert.deepEqual(errorCodes(acked), []);
  assert.equal(acked.data?.acknowledgeAlert.status, 'ACKNOWLEDGED');
  assert.equal(acked.data?.acknowledgeAlert.acknowledgedBy?.id, handler.userId, 'the handler sees itself');
  const [event] = await auditOf(main, { actions: ['alert.acknowledge'], targetId: alert.id });
  assert.equal(event?.actor?.id, handler.userId);
  assert.equal(event?.actorKey?.id, handler.keyId);

  // alerts:write is not keys:read: the rest of the API stays closed.
  assert.deepEqual(errorCodes(await main.request(handler.key, AlUsersDocument)), ['FORBIDDEN']);
});

test('alert.raised is audited as a SYSTEM event targeting the alert; actions ["alert.*"] finds the alert events only', async () => {
  const key = await newKey(main);
  await revoke(main, key);
  await verify(main, { key: key.secret });
  const alert = await oneAlertFor(main, 'REVOKED_KEY_USED', key.id);
  // Raising does not wait for the seal: poll.
  const raised = (
    await pollUntil(() => auditOf(main, { actions: ['alert.raised'], targetId: alert.id }), (e) => e.length > 0, {
      timeoutMs: 4000,
      intervalMs: 100,
      what: 'the alert.raised event',
    })
  ).value;
  assert.equal(raised.length, 1);
  const event = raised[0]!;
  assert.equal(event.actorType, 'SYSTEM');
  assert.equal(event.actor, null);
  assert.equal(event.actorKey, null);
  assert.equal(event.outcome, 'SUCCESS');
  assert.equal(event.targetType, 'alert');
  assert.equal(event.targetId, alert.id);
  assert.equal(event.details?.type, 'REVOKED_KEY_USED');
  assert.equal(event.details?.severity, 'HIGH');
  assert.equal(event.details?.keyId, key.id);
  assert.equal(event.details?.userId, key.ownerId);

  await main.ok(main.adminKey, AlAcknowledgeDocument, { id: alert.id });
  await main.ok(main.adminKey, AlResolveDocument, { id: alert.id });
  const all = await auditOf(main, { actions: ['alert.*'], targetId: alert.id });
  assert.deepEqual(all.map((e) => e.action), ['alert.raised', 'alert.acknowledge', 'alert.resolve']);
  const everything = await auditOf(main, { actions: ['alert.*'] });
  assert.ok(everything.length >= 3);
  assert.ok(everything.every((e) => e.action.startsWith('alert.')), 'alert.* does not match alert_rule.*');
});

// ---------------------------------------------------------------------------------------------
// Filters and pagination

test('alerts(filter): types, minSeverity, status, keyId and userId each narrow the list; totalCount follows', async () => {
  const owner = await createHuman(main, [], 'filter-owner');
  const revoked = await newKey(main, { ownerId: owner });
  const limited = await newKey(main, { ownerId: owner, rateLimit: { limit: 1, windowSeconds: 60 } });
  const expired = await newKey(main, { ownerId: owner });
  await revoke(main, revoked);
  await main.ok(main.adminKey, AlRotateKeyDocument, { id: expired.id, gracePeriodSeconds: 0 });
  const codes = (await verifyMany(main, [{ key: revoked.secret }, { key: expired.secret }])).map((r) => r.code);
  assert.deepEqual(codes, ['REVOKED', 'EXPIRED']);
  await verify(main, { key: limited.secret });
  assert.equal((await verify(main, { key: limited.secret })).code, 'RATE_LIMITED');
  await waitForAlerts(main, { userId: owner }, (n) => n.length === 3, 'three alerts for the owner');
  await sleep(200);

  const ids = async (filter: AlertFilter) => {
    const data = (await main.ok(main.adminKey, AlAlertsDocument, { filter, first: 500 })).alerts;
    assert.equal(data.totalCount, data.nodes.length, `totalCount for ${JSON.stringify(filter)}`);
    return data.nodes.map((a) => a.type).sort();
  };
  assert.deepEqual(await ids({ userId: owner }), ['EXPIRED_KEY_USED', 'RATE_LIMITED', 'REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ keyId: revoked.id }), ['REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ keyId: limited.id }), ['RATE_LIMITED']);
  assert.deepEqual(await ids({ userId: owner, types: ['RATE_LIMITED', 'EXPIRED_KEY_USED'] }), ['EXPIRED_KEY_USED', 'RATE_LIMITED']);
  assert.deepEqual(await ids({ userId: owner, types: ['USAGE_SPIKE'] }), []);
  assert.deepEqual(await ids({ userId: owner, minSeverity: 'HIGH' }), ['REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, minSeverity: 'MEDIUM' }), ['REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, minSeverity: 'LOW' }), ['EXPIRED_KEY_USED', 'RATE_LIMITED', 'REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, minSeverity: 'CRITICAL' }), []);
  assert.deepEqual(await ids({ userId: owner, status: 'OPEN' }), ['EXPIRED_KEY_USED', 'RATE_LIMITED', 'REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, status: 'RESOLVED' }), []);
  assert.deepEqual(await ids({ keyId: '00000000-0000-4000-8000-000000000000' }), []);
  assert.deepEqual(await ids({ userId: revoked.id }), [], 'a key id is not a user id');

  const limitedAlert = (await alerts(main, { keyId: limited.id }))[0]!;
  const expiredAlert = (await alerts(main, { keyId: expired.id }))[0]!;
  await main.ok(main.adminKey, AlAcknowledgeDocument, { id: limitedAlert.id });
  await main.ok(main.adminKey, AlResolveDocument, { id: expiredAlert.id });
  assert.deepEqual(await ids({ userId: owner, status: 'OPEN' }), ['REVOKED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, status: 'ACKNOWLEDGED' }), ['RATE_LIMITED']);
  assert.deepEqual(await ids({ userId: owner, status: 'RESOLVED' }), ['EXPIRED_KEY_USED']);
  assert.deepEqual(await ids({ userId: owner, status: 'RESOLVED', types: ['RATE_LIMITED'] }), []);

  // Across the whole server, minSeverity really is "this severity and above".
  const rank = { INFO: 0, LOW: 1, MEDIUM: 2, HIGH: 3, CRITICAL: 4 } as const;
  const high = await alerts(main, { minSeverity: 'HIGH' });
  assert.ok(high.length > 0 && high.every((a) => rank[a.severity] >= rank.HIGH), 'minSeverity HIGH');
  const all = (await main.ok(main.adminKey, AlAlertsDocument, { first: 500 })).alerts;
  assert.ok(all.nodes.some((a) => a.severity === 'LOW'), 'unfiltered includes LOW alerts');
  assert.ok(all.totalCount > high.length);
});

test('alerts pagination: first/after walk every alert once, in creation order, with totalCount', async () => {
  const owner = await createHuman(main, [], 'page-owner');
  const keys: Key[] = [];
  for (let i = 0; i < 5; i++) keys.push(await newKey(main, { ownerId: owner }));
  for (const key of keys) await revoke(main, key);
  await verifyMany(main, keys.map((k) => ({ key: k.secret })));
  const everything = await waitForAlerts(main, { userId: owner }, (n) => n.length === 5, 'five alerts');

  const seen: string[] = [];
  let after: string | null | undefined = null;
  const pages: number[] = [];
  for (let i = 0; i < 10; i++) {
    const page: AlAlertsQuery['alerts'] = (await main.ok(main.adminKey, AlAlertsDocument, { filter: { userId: owner }, first: 2, after }))
      .alerts;
    assert.equal(page.totalCount, 5, 'totalCount is the whole filter, not the page');
    assert.deepEqual(page.edges.map((e) => e.node.id), page.nodes.map((n) => n.id));
    if (page.edges.length > 0) assert.equal(page.pageInfo.endCursor, page.edges.at(-1)!.cursor);
    seen.push(...page.nodes.map((n) => n.id));
    pages.push(page.nodes.length);
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  assert.deepEqual(pages, [2, 2, 1]);
  assert.deepEqual(seen, everything.map((a) => a.id), 'every alert once, in the order of the full list');
  assert.equal(new Set(seen).size, 5);
  const created = everything.map((a) => Date.parse(a.createdAt));
  assert.deepEqual(created, [...created].sort((x, y) => x - y), 'oldest first');

  const empty = (await main.ok(main.adminKey, AlAlertsDocument, { filter: { userId: owner }, first: 0 })).alerts;
  assert.equal(empty.nodes.length, 0);
  assert.equal(empty.totalCount, 5);
  assert.equal(empty.pageInfo.hasNextPage, true);
  expectBadInput(await main.request(main.adminKey, AlAlertsDocument, { first: 501 }), 'first');
  expectBadInput(await main.request(main.adminKey, AlAlertsDocument, { first: -1 }), 'first');
  expectBadInput(await main.request(main.adminKey, AlAlertsDocument, { after: 'not-a-cursor' }), 'after');
});
