import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client as PgClient } from 'pg';
import { sleep } from './helpers/cluster';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import {
  KtCreateKeyDocument,
  KtCreateRoleDocument,
  KtDisableKeyDocument,
  KtDisableUserDocument,
  KtEnableKeyDocument,
  KtKeyDocument,
  KtKeyUsageDocument,
  KtRevokeKeyDocument,
  KtRotateKeyDocument,
  KtUnassignRoleDocument,
  KtUpdateKeyDocument,
  KtUsageReportDocument,
  KtVerifyDocument,
  KtVerifyManyDocument,
  KtViewerDocument,
  type CreateApiKeyInput,
  type VerifyKeyInput,
} from './generated/graphql';
import { roleIdByName, unique } from './helpers/fixtures';
import {
  createHuman,
  createKey,
  createServiceAccount,
  expectBadInput,
  expectError,
  pollUntil,
  principalWithRoles,
  verify,
  viewerOf,
  withOneCharacterChanged,
  type KeyPrincipal,
} from './helpers/key-principals';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

let t: TestServer;
let verifier: KeyPrincipal;
let memberRoleId: string;
/** Custom role of a calling service's permissions: the owner below holds it. */
let billingRole: { id: string; name: string };
/** A human holding member + billing: owner of most keys verified here. */
let ownerId: string;

before(async () => {
  t = await startTestServer();
  verifier = await principalWithRoles(t, ['verifier'], 'verifier');
  memberRoleId = await roleIdByName(t, 'member');
  billingRole = (
    await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('billing'), permissions: ['invoices:*', 'reports:read'] } })
  ).createRole;
  ownerId = await createHuman(t, [memberRoleId, billingRole.id], 'service-owner');
});
after(() => t.close());

const check = (input: VerifyKeyInput) => verify(t, verifier.key, input);
const keyFor = (input: Partial<CreateApiKeyInput>) => createKey(t, { ownerId, name: unique('k'), ...input });

async function storedRemaining(keyId: string): Promise<number | null> {
  return (await t.ok(t.adminKey, KtKeyDocument, { id: keyId })).apiKey!.remaining;
}

test('VALID returns permissions, roles, expiry, remaining, rate-limit state and metadata', async () => {
  const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
  const metadata = { plan: 'pro', seats: 3, nested: { trial: false } };
  const { secret, key } = await keyFor({
    name: 'full',
    roleIds: [billingRole.id],
    expiresAt,
    remaining: 10,
    rateLimit: { limit: 100, windowSeconds: 60 },
    metadata,
  });
  const before = Date.now();
  const result = await check({ key: secret, ip: '203.0.113.9', resource: 'invoices/42' });
  assert.equal(result.valid, true);
  assert.equal(result.code, 'VALID');
  assert.equal(result.keyId, key.id);
  assert.equal(result.name, 'full');
  assert.equal(result.ownerId, ownerId);
  assert.deepEqual([...result.permissions].sort(), ['invoices:*', 'reports:read']);
  assert.deepEqual(result.roles, [billingRole.name]);
  assert.equal(new Date(result.expiresAt!).getTime(), new Date(expiresAt).getTime());
  assert.equal(result.remaining, 9, 'remaining is the value after this verification');
  assert.ok(result.rateLimit, 'rate-limit state is returned');
  assert.equal(result.rateLimit.limit, 100);
  assert.equal(result.rateLimit.remaining, 99);
  const resetAt = new Date(result.rateLimit.resetAt).getTime();
  assert.ok(resetAt > before && resetAt <= Date.now() + 61_000, `resetAt ${result.rateLimit.resetAt} within the window`);
  assert.deepEqual(result.metadata, metadata);

  const second = await check({ key: secret });
  assert.equal(second.remaining, 8);
  assert.equal(second.rateLimit?.remaining, 98);
  assert.equal(await storedRemaining(key.id), 8);

  // Without limits: unlimited quota (null) and no rate-limit state.
  const plain = await keyFor({ name: 'plain' });
  const unlimited = await check({ key: plain.secret });
  assert.equal(unlimited.code, 'VALID');
  assert.equal(unlimited.remaining, null);
  assert.equal(unlimited.rateLimit, null);
  assert.deepEqual(unlimited.permissions, [], 'a key with no grants holds nothing');
});

test('MALFORMED: one character changed, truncated, wrong shape, and a 1 MB string', async () => {
  const { secret } = await keyFor({ name: 'typo-target' });
  assert.equal((await check({ key: secret })).code, 'VALID');
  const variants = [
    withOneCharacterChanged(secret),
    secret.slice(0, -1),
    `${secret}x`,
    secret.toUpperCase(),
    secret.replace('_', '-'),
    '',
    'kl_',
    'not a key at all',
  ];
  for (const variant of variants) {
    const result = await check({ key: variant });
    assert.equal(result.code, 'MALFORMED', `${JSON.stringify(variant.slice(0, 70))} is MALFORMED`);
    assert.equal(result.valid, false);
    assert.equal(result.keyId, null);
    assert.deepEqual(result.permissions, []);
  }

  // A huge input answers MALFORMED too, and about as fast as a short one (no hashing or lookup).
  const huge = `kl_${'A'.repeat(1_000_000)}`;
  const started = Date.now();
  const result = await check({ key: huge });
  const elapsed = Date.now() - started;
  assert.equal(result.code, 'MALFORMED');
  assert.ok(elapsed < 2000, `1 MB MALFORMED took ${elapsed} ms`);
});

test('NOT_FOUND: a well-formed key that was never issued', async () => {
  for (const key of [generateKey('kl'), generateKey('zz9')]) {
    const result = await check({ key });
    assert.equal(result.code, 'NOT_FOUND');
    assert.equal(result.valid, false);
    assert.equal(result.keyId, null);
    assert.deepEqual(result.permissions, []);
  }
});

test('REVOKED takes effect on the very next verification, here and on /graphql', async () => {
  const { secret, key } = await keyFor({ name: 'soon-revoked', permissions: ['*'] });
  assert.equal((await check({ key: secret })).code, 'VALID');
  assert.equal((await t.request(secret, KtViewerDocument)).status, 200);
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'compromised' });
  const result = await check({ key: secret });
  assert.equal(result.code, 'REVOKED');
  assert.equal(result.valid, false);
  assert.equal(result.keyId, key.id);
  assert.deepEqual(result.permissions, []);
  const api = await t.request(secret, KtViewerDocument);
  assert.equal(api.status, 401);
  assert.equal(api.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
});

test('EXPIRED once expiresAt has passed', async () => {
  const expiresAt = new Date(Date.now() + 1500).toISOString();
  const { secret } = await keyFor({ name: 'expiring', expiresAt });
  assert.equal((await check({ key: secret })).code, 'VALID');
  const { value, at } = await pollUntil(
    async () => (await check({ key: secret })).code,
    (code) => code !== 'VALID',
    { timeoutMs: 5000, intervalMs: 100, what: 'the key to expire' },
  );
  assert.equal(value, 'EXPIRED');
  assert.ok(at >= new Date(expiresAt).getTime());
});

test('DISABLED while disabled, VALID again once enabled', async () => {
  const { secret, key } = await keyFor({ name: 'switch' });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id });
  const result = await check({ key: secret });
  assert.equal(result.code, 'DISABLED');
  assert.deepEqual(result.permissions, []);
  await t.ok(t.adminKey, KtEnableKeyDocument, { id: key.id });
  assert.equal((await check({ key: secret })).code, 'VALID');
});

test("OWNER_DISABLED: the owner is disabled, or a service account's human owner is", async () => {
  const humanId = await createHuman(t, [memberRoleId], 'leaver');
  const own = await createKey(t, { ownerId: humanId, name: 'leaver-key', permissions: ['*'] });
  const svcOwnerId = await createHuman(t, [memberRoleId], 'svc-human');
  const svcId = await createServiceAccount(t, svcOwnerId, [], 'pipeline');
  const svcKey = await createKey(t, { ownerId: svcId, name: 'pipeline-key' });
  assert.equal((await check({ key: own.secret })).code, 'VALID');
  assert.equal((await check({ key: svcKey.secret })).code, 'VALID');

  await t.ok(t.adminKey, KtDisableUserDocument, { id: humanId, reason: 'left the company' });
  const result = await check({ key: own.secret });
  assert.equal(result.code, 'OWNER_DISABLED');
  assert.deepEqual(result.permissions, []);
  assert.equal((await t.request(own.secret, KtViewerDocument)).status, 401);

  await t.ok(t.adminKey, KtDisableUserDocument, { id: svcOwnerId, reason: 'left the company' });
  assert.equal((await check({ key: svcKey.secret })).code, 'OWNER_DISABLED');
});

test('IP_NOT_ALLOWED: IPv4 and IPv6 allowlists; no ip given is not allowed', async () => {
  const v4 = await keyFor({ name: 'v4', allowedCidrs: ['10.0.0.0/8'] });
  assert.equal((await check({ key: v4.secret, ip: '192.168.1.1' })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: v4.secret })).code, 'IP_NOT_ALLOWED', 'no ip with an allowlist');
  assert.equal((await check({ key: v4.secret, ip: '11.0.0.1' })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: v4.secret, ip: '10.200.3.4' })).code, 'VALID');
  const denied = await check({ key: v4.secret, ip: '192.168.1.1' });
  assert.deepEqual(denied.permissions, []);

  const v6 = await keyFor({ name: 'v6', allowedCidrs: ['2001:db8::/32'] });
  assert.equal((await check({ key: v6.secret, ip: '2001:db8::1' })).code, 'VALID');
  assert.equal((await check({ key: v6.secret, ip: '2001:db8:ffff::42' })).code, 'VALID');
  assert.equal((await check({ key: v6.secret, ip: '2001:db9::1' })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: v6.secret, ip: '10.0.0.1' })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: v6.secret })).code, 'IP_NOT_ALLOWED');
});

test('INSUFFICIENT_PERMISSIONS: every requested permission must be covered, wildcards included', async () => {
  const reader = await keyFor({ name: 'reader', permissions: ['invoices:read'] });
  const write = await check({ key: reader.secret, permissions: ['invoices:write'] });
  assert.equal(write.code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal(write.valid, false);
  // The key is usable, only not for this: the answer shows what it holds, as a valid one would.
  assert.deepEqual([write.keyId, write.permissions], [reader.key.id, ['invoices:read']]);
  assert.equal((await check({ key: reader.secret, permissions: ['invoices:read'] })).code, 'VALID');
  assert.equal((await check({ key: reader.secret, permissions: ['invoices:read', 'invoices:write'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await check({ key: reader.secret, permissions: ['invoices:*'] })).code, 'INSUFFICIENT_PERMISSIONS');

  const wildcard = await keyFor({ name: 'wildcard', permissions: ['invoices:*'] });
  assert.equal((await check({ key: wildcard.secret, permissions: ['invoices:read'] })).code, 'VALID');
  assert.equal((await check({ key: wildcard.secret, permissions: ['invoices:read', 'invoices:refund:full'] })).code, 'VALID');
  assert.equal((await check({ key: wildcard.secret, permissions: ['reports:read'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await check({ key: wildcard.secret, permissions: ['*'] })).code, 'INSUFFICIENT_PERMISSIONS');

  // A grant the owner does not hold is not effective.
  const beyondOwner = await keyFor({ name: 'beyond', permissions: ['invoices:read', 'orders:read'] });
  assert.equal((await check({ key: beyondOwner.secret, permissions: ['orders:read'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.deepEqual((await check({ key: beyondOwner.secret })).permissions, ['invoices:read']);
});

test('USAGE_EXCEEDED once the quota is used up; remaining counts down', async () => {
  const { secret, key } = await keyFor({ name: 'quota', remaining: 2 });
  const first = await check({ key: secret });
  assert.equal(first.code, 'VALID');
  assert.equal(first.remaining, 1);
  const second = await check({ key: secret });
  assert.equal(second.code, 'VALID');
  assert.equal(second.remaining, 0);
  const third = await check({ key: secret });
  assert.equal(third.code, 'USAGE_EXCEEDED');
  assert.equal(third.valid, false);
  assert.equal(third.remaining, 0);
  assert.equal(await storedRemaining(key.id), 0);

  const empty = await keyFor({ name: 'empty', remaining: 0 });
  assert.equal((await check({ key: empty.secret })).code, 'USAGE_EXCEEDED');
});

test('RATE_LIMITED after limit verifications within the window', async () => {
  const { secret } = await keyFor({ name: 'limited', rateLimit: { limit: 3, windowSeconds: 60 } });
  const remainings: number[] = [];
  for (let i = 0; i < 3; i++) {
    const result = await check({ key: secret });
    assert.equal(result.code, 'VALID', `verification ${i + 1} of 3`);
    remainings.push(result.rateLimit!.remaining);
  }
  assert.deepEqual(remainings, [2, 1, 0]);
  const limited = await check({ key: secret });
  assert.equal(limited.code, 'RATE_LIMITED');
  assert.equal(limited.valid, false);
  if (limited.rateLimit) assert.equal(limited.rateLimit.remaining, 0);
  assert.equal((await check({ key: secret })).code, 'RATE_LIMITED');

  // Exact under concurrency too: 10 at once against a limit of 3.
  const burst = await keyFor({ name: 'burst', rateLimit: { limit: 3, windowSeconds: 60 } });
  const results = await Promise.all(
    Array.from({ length: 10 }, () => t.request(verifier.key, KtVerifyDocument, { input: { key: burst.secret } })),
  );
  const codes = results.map((r) => r.data?.verifyKey.code);
  assert.equal(codes.filter((c) => c === 'VALID').length, 3, JSON.stringify(codes));
  assert.equal(codes.filter((c) => c === 'RATE_LIMITED').length, 7);
});

test('failed verifications consume neither quota nor rate limit', async () => {
  const { secret, key } = await keyFor({
    name: 'frugal',
    permissions: ['invoices:read'],
    allowedCidrs: ['10.0.0.0/8'],
    remaining: 3,
    rateLimit: { limit: 2, windowSeconds: 60 },
  });
  for (let i = 0; i < 5; i++) {
    const result = await check({ key: secret, ip: '10.0.0.1', permissions: ['invoices:write'] });
    assert.equal(result.code, 'INSUFFICIENT_PERMISSIONS');
    assert.equal(result.remaining, 3, 'a failed check leaves remaining as it was');
  }
  for (let i = 0; i < 3; i++) assert.equal((await check({ key: secret, ip: '192.168.0.1' })).code, 'IP_NOT_ALLOWED');
  assert.equal(await storedRemaining(key.id), 3, 'no quota consumed by failures');

  // The rate limit is intact too: two VALID, then RATE_LIMITED, which itself takes no quota.
  const a = await check({ key: secret, ip: '10.0.0.1', permissions: ['invoices:read'] });
  assert.equal(a.code, 'VALID');
  assert.equal(a.remaining, 2);
  assert.equal(a.rateLimit?.remaining, 1);
  const b = await check({ key: secret, ip: '10.0.0.1' });
  assert.equal(b.code, 'VALID');
  assert.equal(b.remaining, 1);
  const c = await check({ key: secret, ip: '10.0.0.1' });
  assert.equal(c.code, 'RATE_LIMITED');
  assert.equal(c.remaining, 1);
  assert.equal(await storedRemaining(key.id), 1, 'RATE_LIMITED took no quota');

  // USAGE_EXCEEDED takes no rate-limit slot either.
  const other = await keyFor({ name: 'frugal-2', remaining: 1, rateLimit: { limit: 2, windowSeconds: 60 } });
  assert.equal((await check({ key: other.secret })).code, 'VALID');
  for (let i = 0; i < 3; i++) assert.equal((await check({ key: other.secret })).code, 'USAGE_EXCEEDED');
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: other.key.id, input: { remaining: 5 } });
  const again = await check({ key: other.secret });
  assert.equal(again.code, 'VALID', 'the second slot of the window is still free');
  assert.equal(again.rateLimit?.remaining, 0);
  assert.equal((await check({ key: other.secret })).code, 'RATE_LIMITED');
});

test('exact quota under concurrency: 100 concurrent verifications of remaining 50 give exactly 50 VALID', async () => {
  const { secret, key } = await keyFor({ name: 'contended', remaining: 50 });
  const results = await Promise.all(
    Array.from({ length: 100 }, () => t.request(verifier.key, KtVerifyDocument, { input: { key: secret } })),
  );
  for (const r of results) assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  const codes = results.map((r) => r.data!.verifyKey.code);
  assert.equal(codes.filter((c) => c === 'VALID').length, 50, `codes: ${JSON.stringify(codes)}`);
  assert.equal(codes.filter((c) => c === 'USAGE_EXCEEDED').length, 50);
  // Each VALID saw a different quota left: 49 down to 0, none twice.
  const left = results.filter((r) => r.data!.verifyKey.code === 'VALID').map((r) => r.data!.verifyKey.remaining!);
  assert.deepEqual([...left].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  assert.equal(await storedRemaining(key.id), 0);
  const rows = await t.db.query<{ remaining: number }>('SELECT remaining FROM api_keys WHERE id = $1', [key.id]);
  assert.equal(rows[0]?.remaining, 0);
});

test('a burst that spends the quota with the rate-limit window full: the rest are USAGE_EXCEEDED, checked before RATE_LIMITED', async () => {
  const { secret, key } = await keyFor({ name: 'burst', remaining: 5, rateLimit: { limit: 10, windowSeconds: 600 } });
  // The quota row held by the test, so the burst's quota statements are all still running when
  // the window fills (as under load); released once every request has arrived.
  const holder = new PgClient({ connectionString: t.db.url });
  await holder.connect();
  let codes: string[];
  try {
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE', [key.id]);
    const answers = Promise.all(Array.from({ length: 20 }, () => check({ key: secret })));
    for (let attempt = 0; attempt < 200; attempt++) {
      const waiting = await t.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
      );
      if (waiting[0]!.n > 0) break;
      await sleep(20);
    }
    await sleep(300);
    await holder.query('COMMIT');
    codes = (await answers).map((r) => r.code);
  } finally {
    await holder.end();
  }
  const count = (code: string) => codes.filter((c) => c === code).length;
  assert.deepEqual([count('VALID'), count('USAGE_EXCEEDED'), count('RATE_LIMITED')], [5, 15, 0], JSON.stringify(codes));

  // Quota left and the window full: that is RATE_LIMITED.
  const roomy = await keyFor({ name: 'burst-roomy', remaining: 100, rateLimit: { limit: 10, windowSeconds: 600 } });
  const roomyCodes = (await Promise.all(Array.from({ length: 20 }, () => check({ key: roomy.secret })))).map((r) => r.code);
  assert.deepEqual(
    [roomyCodes.filter((c) => c === 'VALID').length, roomyCodes.filter((c) => c === 'RATE_LIMITED').length],
    [10, 10],
    JSON.stringify(roomyCodes),
  );
});

test('concurrent verifications arriving when a refill falls due all see the refilled quota', async () => {
  const { secret, key } = await keyFor({ name: 'refill-race', remaining: 3, refill: { amount: 10, intervalSeconds: 1 } });
  const drain = (await t.ok(verifier.key, KtVerifyManyDocument, { inputs: Array.from({ length: 4 }, () => ({ key: secret })) })).verifyKeys;
  assert.deepEqual(drain.map((r) => r.code).sort(), ['USAGE_EXCEEDED', 'VALID', 'VALID', 'VALID']);
  await new Promise((resolve) => setTimeout(resolve, 1300));
  // All nine wait on the row lock taken by the first, which applies the refill.
  const burst = (await t.ok(verifier.key, KtVerifyManyDocument, { inputs: Array.from({ length: 9 }, () => ({ key: secret })) })).verifyKeys;
  assert.deepEqual(burst.map((r) => r.code), Array(9).fill('VALID'));
  assert.deepEqual(burst.map((r) => r.remaining).sort((a, b) => a! - b!), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(await storedRemaining(key.id), 1);
});

test('refill restores the quota after intervalSeconds', async () => {
  const { secret, key } = await keyFor({ name: 'refilling', remaining: 1, refill: { amount: 2, intervalSeconds: 1 } });
  assert.ok(key.refill?.lastRefillAt, 'refill starts counting at creation');
  const refillStart = new Date(key.refill.lastRefillAt).getTime();
  const first = await check({ key: secret });
  assert.equal(first.code, 'VALID');
  assert.equal(first.remaining, 0);
  const exhausted = await check({ key: secret });
  assert.equal(exhausted.code, 'USAGE_EXCEEDED');

  // USAGE_EXCEEDED consumes nothing, so polling with verifications is safe.
  const { value, at } = await pollUntil(
    () => check({ key: secret }),
    (r) => r.code !== 'USAGE_EXCEEDED',
    { timeoutMs: 5000, intervalMs: 100, what: 'the refill' },
  );
  assert.equal(value.code, 'VALID');
  assert.equal(value.remaining, 1, 'refilled to 2, minus this verification');
  assert.ok(at >= refillStart + 1000, `refilled only after the interval (${at - refillStart} ms)`);
  const next = await check({ key: secret });
  assert.equal(next.code, 'VALID');
  assert.equal(next.remaining, 0);
});

test('codes are checked in the contract order', async () => {
  const humanId = await createHuman(t, [memberRoleId], 'order-owner');
  // Disabled key of a disabled owner, with an allowlist the request does not match: DISABLED first.
  const k = await createKey(t, { ownerId: humanId, name: 'order', allowedCidrs: ['10.0.0.0/8'], remaining: 0 });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: k.key.id });
  await t.ok(t.adminKey, KtDisableUserDocument, { id: humanId, reason: 'order test' });
  assert.equal((await check({ key: k.secret, ip: '192.168.0.1', permissions: ['x:y'] })).code, 'DISABLED');
  await t.ok(t.adminKey, KtEnableKeyDocument, { id: k.key.id });
  assert.equal((await check({ key: k.secret, ip: '192.168.0.1', permissions: ['x:y'] })).code, 'OWNER_DISABLED');

  // IP before permissions before quota.
  const q = await keyFor({ name: 'order-2', allowedCidrs: ['10.0.0.0/8'], remaining: 0 });
  assert.equal((await check({ key: q.secret, ip: '192.168.0.1', permissions: ['x:y'] })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: q.secret, ip: '10.0.0.1', permissions: ['x:y'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await check({ key: q.secret, ip: '10.0.0.1' })).code, 'USAGE_EXCEEDED');

  // An expired (rotated, grace 0) key that is also disabled answers EXPIRED; once revoked, REVOKED.
  const r = await keyFor({ name: 'order-3' });
  await t.ok(t.adminKey, KtRotateKeyDocument, { id: r.key.id, gracePeriodSeconds: 0 });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: r.key.id });
  assert.equal((await check({ key: r.secret })).code, 'EXPIRED');
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: r.key.id, reason: 'order test' });
  assert.equal((await check({ key: r.secret })).code, 'REVOKED');
});

test('verifyKeys with one key given several times spends in input order: the first inputs get what is left', async () => {
  // Through the fast path (a plain document) and through Apollo (with __typename inside), both.
  for (const selection of ['{ code remaining }', '{ __typename code remaining }']) {
    const quota = await keyFor({ name: unique('repeated-quota'), remaining: 3 });
    const limited = await keyFor({ name: unique('repeated-both'), remaining: 2, rateLimit: { limit: 4, windowSeconds: 600 } });
    const run = async (secret: string, times: number) => {
      const result = await postGraphQL<{ verifyKeys: Array<{ code: string; remaining: number | null }> }>(
        t.url,
        verifier.key,
        `query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) ${selection} }`,
        { i: Array.from({ length: times }, () => ({ key: secret })) },
      );
      assert.equal(result.errors, undefined, JSON.stringify(result.errors));
      return result.data!.verifyKeys.map((r) => `${r.code}/${r.remaining}`);
    };
    assert.deepEqual(await run(quota.secret, 5), ['VALID/2', 'VALID/1', 'VALID/0', 'USAGE_EXCEEDED/0', 'USAGE_EXCEEDED/0'], selection);
    // Quota is checked before the rate limit: once it is spent, that is the answer.
    assert.deepEqual(await run(limited.secret, 4), ['VALID/1', 'VALID/0', 'USAGE_EXCEEDED/0', 'USAGE_EXCEEDED/0'], selection);
  }
});

test('verifyKeys answers in input order; more than 100 inputs is BAD_USER_INPUT', async () => {
  const valid = await keyFor({ name: 'batch-valid', permissions: ['invoices:read'] });
  const revoked = await keyFor({ name: 'batch-revoked' });
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: revoked.key.id, reason: 'batch' });
  const disabled = await keyFor({ name: 'batch-disabled' });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: disabled.key.id });
  const other = await keyFor({ name: 'batch-other' });

  const inputs: VerifyKeyInput[] = [
    { key: valid.secret },
    { key: withOneCharacterChanged(valid.secret) },
    { key: generateKey('kl') },
    { key: revoked.secret },
    { key: valid.secret, permissions: ['invoices:write'] },
    { key: disabled.secret },
    { key: other.secret },
    { key: valid.secret, permissions: ['invoices:read'] },
  ];
  const results = (await t.ok(verifier.key, KtVerifyManyDocument, { inputs })).verifyKeys;
  assert.deepEqual(
    results.map((r) => r.code),
    ['VALID', 'MALFORMED', 'NOT_FOUND', 'REVOKED', 'INSUFFICIENT_PERMISSIONS', 'DISABLED', 'VALID', 'VALID'],
  );
  assert.deepEqual(
    results.map((r) => r.keyId),
    [valid.key.id, null, null, revoked.key.id, valid.key.id, disabled.key.id, other.key.id, valid.key.id],
  );

  const hundred = Array.from({ length: 100 }, (_, i) => ({ key: `not-a-key-${i}` }));
  const ok = (await t.ok(verifier.key, KtVerifyManyDocument, { inputs: hundred })).verifyKeys;
  assert.equal(ok.length, 100);
  assert.ok(ok.every((r) => r.code === 'MALFORMED'));

  const tooMany = [...hundred, { key: valid.secret }];
  expectBadInput(await t.request(verifier.key, KtVerifyManyDocument, { inputs: tooMany }), /^inputs/);
});

test('verifyKey and verifyKeys need keys:verify', async () => {
  const member = await principalWithRoles(t, ['member'], 'not-a-verifier');
  const auditor = await principalWithRoles(t, ['auditor'], 'auditor');
  const { secret } = await keyFor({ name: 'probe-target' });
  for (const caller of [member, auditor]) {
    expectError(await t.request(caller.key, KtVerifyDocument, { input: { key: secret } }), 'FORBIDDEN');
    expectError(await t.request(caller.key, KtVerifyManyDocument, { inputs: [{ key: secret }] }), 'FORBIDDEN');
  }
});

test('usage is recorded: ApiKey.usage, usageReport, lastUsedAt and lastUsedIp', async () => {
  const from = new Date(Date.now() - 60_000).toISOString();
  const { secret, key } = await keyFor({ name: 'metered', permissions: ['invoices:read'] });
  const untouched = await keyFor({ name: 'unmetered' });
  const beforeUse = Date.now();
  assert.equal((await check({ key: secret, ip: '203.0.113.5', resource: 'inv/1' })).code, 'VALID');
  assert.equal((await check({ key: secret, ip: '203.0.113.5', resource: 'inv/2' })).code, 'VALID');
  assert.equal((await check({ key: secret, ip: '203.0.113.77', resource: 'inv/3' })).code, 'VALID');
  for (let i = 0; i < 2; i++) {
    assert.equal((await check({ key: secret, ip: '198.51.100.1', permissions: ['invoices:write'] })).code, 'INSUFFICIENT_PERMISSIONS');
  }
  // Not attributable to the key: a typo of it.
  assert.equal((await check({ key: withOneCharacterChanged(secret) })).code, 'MALFORMED');
  const afterUse = Date.now();
  await t.server.services.usage.flush();
  const to = new Date(Date.now() + 60_000).toISOString();

  const usage = (await t.ok(t.adminKey, KtKeyUsageDocument, { id: key.id, from, to, bucket: 'MINUTE' })).apiKey!;
  const total = usage.usage.reduce((sum, p) => ({ valid: sum.valid + p.valid, invalid: sum.invalid + p.invalid }), { valid: 0, invalid: 0 });
  assert.deepEqual(total, { valid: 3, invalid: 2 }, `usage points ${JSON.stringify(usage.usage)}`);
  for (const point of usage.usage) assert.equal(new Date(point.start).getUTCSeconds(), 0, 'MINUTE buckets start on the minute');
  assert.equal(usage.lastUsedIp, '203.0.113.77', 'the latest valid use');
  assert.ok(usage.lastUsedAt, 'lastUsedAt is set');
  const lastUsed = new Date(usage.lastUsedAt).getTime();
  assert.ok(lastUsed >= beforeUse - 1000 && lastUsed <= afterUse + 1000, `lastUsedAt ${usage.lastUsedAt}`);

  const report = (await t.ok(t.adminKey, KtUsageReportDocument, { from, to })).usageReport;
  const row = report.find((r) => r.key.id === key.id);
  assert.ok(row, 'usageReport lists the key');
  assert.equal(row.valid, 3);
  assert.equal(row.invalid, 2);
  assert.equal(row.owner.id, ownerId);
  assert.ok(!report.some((r) => r.key.id === untouched.key.id), 'an unused key has no row');

  const byOwner = (await t.ok(t.adminKey, KtUsageReportDocument, { from, to, ownerId })).usageReport;
  assert.ok(byOwner.some((r) => r.key.id === key.id));
  assert.ok(byOwner.every((r) => r.owner.id === ownerId));
  const otherOwner = await createHuman(t, [memberRoleId], 'no-usage');
  assert.deepEqual((await t.ok(t.adminKey, KtUsageReportDocument, { from, to, ownerId: otherOwner })).usageReport, []);

  // keys:own reports on one's own keys only.
  const member = await principalWithRoles(t, ['member'], 'report-member');
  assert.equal((await check({ key: member.key })).code, 'VALID');
  await t.server.services.usage.flush();
  const own = (await t.ok(member.key, KtUsageReportDocument, { from, to: new Date(Date.now() + 60_000).toISOString() })).usageReport;
  assert.ok(own.some((r) => r.key.id === member.keyId), "the member's own key is reported");
  assert.ok(own.every((r) => r.owner.id === member.userId), `only own keys: ${JSON.stringify(own)}`);
  expectError(await t.request(member.key, KtUsageReportDocument, { from, to, ownerId }), 'FORBIDDEN');
});

test('verifications are usage, not audit events', async () => {
  const { secret } = await keyFor({ name: 'quiet', permissions: ['invoices:read'] });
  const count = async () => Number((await t.db.query<{ n: string }>('SELECT count(*) AS n FROM audit_events'))[0]!.n);
  const before = await count();
  await check({ key: secret });
  await check({ key: secret, permissions: ['invoices:write'] });
  await check({ key: withOneCharacterChanged(secret) });
  await check({ key: generateKey('kl') });
  await t.ok(verifier.key, KtVerifyManyDocument, { inputs: [{ key: secret }, { key: generateKey('kl') }] });
  assert.equal(await count(), before);
});

test("the API's own authentication applies the key's rate limit: HTTP 429 on the third request", async () => {
  const { secret } = await keyFor({ name: 'api-limited', permissions: ['*'], rateLimit: { limit: 2, windowSeconds: 60 } });
  assert.equal((await t.request(secret, KtViewerDocument)).status, 200);
  assert.equal((await t.request(secret, KtViewerDocument)).status, 200);
  const third = await t.request(secret, KtViewerDocument);
  assert.equal(third.status, 429);
  assert.equal(third.errors?.[0]?.extensions?.code, 'RATE_LIMITED');
  assert.equal(third.data ?? null, null);
  // RFC 9110: when to come back, the same seconds as the error's extension.
  const retryAfter = Number(third.headers?.get('retry-after'));
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
  assert.equal(retryAfter, third.errors?.[0]?.extensions?.retryAfterSeconds);
  // X-API-Key is the same key, so the same window.
  const viaHeader = await postGraphQL<unknown>(t.url, null, '{ viewer { user { id } } }', undefined, { 'x-api-key': secret });
  assert.equal(viaHeader.status, 429);
});

test("the API's own authentication checks the allowlist against the source address and the quota", async () => {
  const elsewhere = await keyFor({ name: 'api-elsewhere', permissions: ['*'], allowedCidrs: ['10.0.0.0/8'] });
  const denied = await t.request(elsewhere.secret, KtViewerDocument);
  assert.equal(denied.status, 401);
  assert.equal(denied.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
  const loopback = await keyFor({ name: 'api-loopback', permissions: ['*'], allowedCidrs: ['127.0.0.0/8', '::1/128'] });
  assert.equal((await t.request(loopback.secret, KtViewerDocument)).status, 200);

  const once = await keyFor({ name: 'api-once', permissions: ['*'], remaining: 1 });
  const user = await viewerOf(t, once.secret);
  assert.equal(user.userId, ownerId);
  const spent = await t.request(once.secret, KtViewerDocument);
  assert.equal(spent.status, 401, 'the quota is spent');
  assert.equal(spent.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
});

test('TRUST_PROXY: the allowlist is checked against X-Forwarded-For only when trusted', async () => {
  const query = '{ viewer { user { id } } }';
  const inside = await keyFor({ name: 'behind-proxy', permissions: ['*'], allowedCidrs: ['10.0.0.0/8'] });
  // Not trusted (the default): a forged header does not get a key past its allowlist.
  const forged = await postGraphQL<unknown>(t.url, inside.secret, query, undefined, { 'x-forwarded-for': '10.1.2.3' });
  assert.equal(forged.status, 401);

  const proxied = await startTestServer({ trustProxy: true });
  try {
    const created = (
      await proxied.ok(proxied.adminKey, KtCreateKeyDocument, {
        input: { name: 'behind-proxy', permissions: ['*'], allowedCidrs: ['10.0.0.0/8'] },
      })
    ).createApiKey;
    // The trusted proxy appends the address it saw: the right-most entry; anything left of it is the client's word.
    const through = await postGraphQL<unknown>(proxied.url, created.secret, query, undefined, { 'x-forwarded-for': '192.168.9.9, 10.1.2.3' });
    assert.equal(through.status, 200, JSON.stringify(through.errors));
    const claimed = await postGraphQL<unknown>(proxied.url, created.secret, query, undefined, { 'x-forwarded-for': '10.1.2.3, 192.168.9.9' });
    assert.equal(claimed.status, 401, 'a left-hand entry the client typed is not its address');
    const outside = await postGraphQL<unknown>(proxied.url, created.secret, query, undefined, { 'x-forwarded-for': '192.168.9.9' });
    assert.equal(outside.status, 401);
  } finally {
    await proxied.close();
  }
});

interface WsResult {
  data?: Record<string, unknown> | null;
  errors?: Array<{ message: string; extensions?: Record<string, unknown> }>;
}

/** One operation over graphql-transport-ws: its result, or the close event / error it ended with. */
function wsRun(client: Client, query: string): Promise<WsResult | { closed: unknown }> {
  return new Promise((resolve) => {
    let result: WsResult = {};
    client.subscribe(
      { query },
      {
        next: (value) => (result = value as WsResult),
        error: (error) => resolve({ closed: (error as { code?: number }).code ?? String(error) }),
        complete: () => resolve(result),
      },
    );
  });
}

/** The operation did not run as the key: an error, or the connection was closed. */
function refused(outcome: WsResult | { closed: unknown }): boolean {
  if ('closed' in outcome) return true;
  return Boolean(outcome.errors?.length) && !outcome.data;
}

/** One long-lived connection (a lazy client would reconnect, and re-authenticate, per operation). */
function openWs(secret: string): { client: Client; connections: () => number } {
  const client = createClient({
    url: t.url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${secret}` },
    retryAttempts: 0,
    lazy: false,
    onNonLazyError: () => {}, // the close after a revocation is what the tests expect; not worth printing
  });
  let count = 0;
  client.on('connected', () => count++);
  return { client, connections: () => count };
}

test("WebSocket: an open connection loses a permission the moment the key's owner loses the role", async () => {
  const verifierRoleId = await roleIdByName(t, 'verifier');
  const humanId = await createHuman(t, [memberRoleId, verifierRoleId], 'ws-role');
  const { secret } = await createKey(t, { ownerId: humanId, name: 'ws-role-key', permissions: ['*'] });
  const probe = `{ verifyKey(input: { key: "${generateKey('kl')}" }) { code } }`;
  const { client, connections } = openWs(secret);
  try {
    const first = await wsRun(client, probe);
    assert.ok(!('closed' in first) && first.data, `the key works over WebSocket: ${JSON.stringify(first)}`);
    await t.ok(t.adminKey, KtUnassignRoleDocument, { userId: humanId, roleId: verifierRoleId });
    // Over HTTP the very next request is FORBIDDEN; the open connection must not keep keys:verify either.
    expectError(await t.request(secret, KtVerifyDocument, { input: { key: generateKey('kl') } }), 'FORBIDDEN');
    const afterRoleLoss = await wsRun(client, probe);
    assert.equal(connections(), 1, 'both operations ran on one connection');
    assert.ok(refused(afterRoleLoss), `verifyKey still allowed over WebSocket after the role was removed: ${JSON.stringify(afterRoleLoss)}`);
  } finally {
    await client.dispose();
  }
});

test('WebSocket: an open connection stops working once its key is revoked', async () => {
  const { secret, key } = await keyFor({ name: 'ws-revoke-key', permissions: ['*'] });
  const { client, connections } = openWs(secret);
  try {
    const first = await wsRun(client, '{ viewer { user { id } } }');
    assert.ok(!('closed' in first) && first.data, `the key works over WebSocket: ${JSON.stringify(first)}`);
    await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'ws test' });
    assert.equal((await t.request(secret, KtViewerDocument)).status, 401, 'over HTTP the revoked key is refused at once');
    const afterRevoke = await wsRun(client, '{ viewer { user { id } } }');
    assert.ok(refused(afterRevoke), `a revoked key still runs operations over WebSocket: ${JSON.stringify(afterRevoke)}`);
    assert.equal(connections(), 1, 'both operations ran on one connection');
  } finally {
    await client.dispose();
  }
});

test('usage records keep any resource text exactly, quotes, braces and the word NULL included', async () => {
  const { secret, key } = await keyFor({ name: 'resources' });
  const resources = ['NULL', 'null', '', ' spaced ', 'a"b\\c', '{x,y}', 'inv/é/1', "it's"];
  for (const resource of resources) assert.equal((await check({ key: secret, resource })).code, 'VALID');
  await t.server.services.usage.flush();
  const rows = await t.db.query<{ resource: string | null }>('SELECT resource FROM usage_events WHERE key_id = $1', [key.id]);
  assert.deepEqual(rows.map((r) => r.resource).sort(), [...resources].sort());
});

/** The key's stored lastUsedAt, epoch milliseconds. */
async function storedLastUse(keyId: string): Promise<number> {
  const [{ lastUsedAt }] = await t.db.query<{ lastUsedAt: Date }>('SELECT last_used_at AS "lastUsedAt" FROM api_keys WHERE id = $1', [keyId]);
  return lastUsedAt.getTime();
}

test('identical verifications in one second are one usage row with their count; every count and the last use stay exact', async () => {
  const { key } = await keyFor({ name: 'hot' });
  const usage = t.server.services.usage;
  await usage.flush();
  const at = Date.UTC(2031, 4, 6, 7, 8, 9, 123);
  const same = { occurredAt: at, keyId: key.id, ownerId, code: 'VALID' as never, ip: '203.0.113.9', resource: 'inv/1' };
  for (let i = 0; i < 500; i++) usage.record(same);
  usage.record({ ...same, occurredAt: at + 876 }); // later in the same second
  usage.record({ ...same, ip: '203.0.113.10' }); // another caller
  usage.record({ ...same, code: 'RATE_LIMITED' as never });
  usage.record({ ...same, resource: 'inv/2' });
  usage.record({ ...same, occurredAt: at + 1000 }); // the next second: a row of its own
  for (let i = 0; i < 3; i++) usage.record({ ...same, occurredAt: at + 1500 }); // merged into it
  assert.equal(usage.buffered, 508, 'buffered counts records, not rows');
  const writtenBefore = usage.written;
  await usage.flush();
  assert.equal(usage.written - writtenBefore, 508, 'written counts records');

  const rows = await t.db.query<{ at: Date; ip: string; code: string; resource: string; occurrences: number }>(
    'SELECT occurred_at AS at, ip, code, resource, occurrences FROM usage_events WHERE key_id = $1 ORDER BY occurred_at, occurrences DESC',
    [key.id],
  );
  assert.equal(rows.length, 5, `rows: ${JSON.stringify(rows)}`);
  assert.deepEqual(rows.map((r) => r.occurrences), [501, 1, 1, 1, 4]);
  assert.equal(rows[0]!.at.getTime(), at, "a row keeps its first record's millisecond");
  assert.equal(rows[4]!.at.getTime(), at + 1000);
  assert.equal(await storedLastUse(key.id), at + 1500, 'lastUsedAt is the latest record, merged or not');

  const from = new Date(at - 60_000).toISOString();
  const to = new Date(at + 60_000).toISOString();
  const points = (await t.ok(t.adminKey, KtKeyUsageDocument, { id: key.id, from, to, bucket: 'MINUTE' })).apiKey!.usage;
  const total = points.reduce((sum, p) => ({ valid: sum.valid + p.valid, invalid: sum.invalid + p.invalid }), { valid: 0, invalid: 0 });
  assert.deepEqual(total, { valid: 507, invalid: 1 });
  const report = (await t.ok(t.adminKey, KtUsageReportDocument, { from, to })).usageReport.find((r) => r.key?.id === key.id);
  assert.deepEqual({ valid: report?.valid, invalid: report?.invalid }, { valid: 507, invalid: 1 });
  // A range ending where the next second starts leaves that second's records out.
  const upToAt = (await t.ok(t.adminKey, KtUsageReportDocument, { from, to: new Date(at + 1000).toISOString() })).usageReport.find((r) => r.key?.id === key.id);
  assert.deepEqual({ valid: upToAt?.valid, invalid: upToAt?.invalid }, { valid: 503, invalid: 1 });
});

test('a batch the database refuses is kept, its merged rows and last use included, and written once it accepts', async () => {
  const { key } = await keyFor({ name: 'refused-batch' });
  const usage = t.server.services.usage;
  await usage.flush();
  const at = Date.UTC(2031, 5, 7, 8, 9, 10, 0);
  const record = { keyId: key.id, ownerId, code: 'VALID' as never, ip: '203.0.113.9', resource: null };
  // Refused from the start: a background flush between recording and refusing would write the batch.
  await t.db.query('ALTER TABLE usage_events RENAME TO usage_events_away');
  try {
    for (const offset of [0, 300, 600]) usage.record({ ...record, occurredAt: at + offset });
    await usage.flush();
    assert.equal(usage.buffered, 3, 'the refused batch is back in the buffer');
  } finally {
    await t.db.query('ALTER TABLE usage_events_away RENAME TO usage_events');
  }
  await usage.flush();
  const rows = await t.db.query<{ at: Date; occurrences: number }>('SELECT occurred_at AS at, occurrences FROM usage_events WHERE key_id = $1', [key.id]);
  assert.deepEqual(rows.map((r) => [r.at.getTime(), r.occurrences]), [[at, 3]]);
  assert.equal(await storedLastUse(key.id), at + 600, 'the last use survives the retry');
});
