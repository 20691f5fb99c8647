import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import { generateKey } from '../src/auth/key-format';
import { startServer } from '../src/server/app';
import {
  EnableUserDocument,
  KtAssignRoleDocument,
  KtCreateKeyDocument,
  KtCreateRoleDocument,
  KtDisableKeyDocument,
  KtDisableUserDocument,
  KtEnableKeyDocument,
  KtKeyDocument,
  KtRevokeAllKeysDocument,
  KtRevokeKeyDocument,
  KtRotateKeyDocument,
  KtUnassignRoleDocument,
  KtUpdateKeyDocument,
  KtVerifyDocument,
  UpdateRoleDocument,
  type CreateApiKeyInput,
  type VerifyKeyInput,
} from './generated/graphql';
import { roleIdByName, unique } from './helpers/fixtures';
import {
  createHuman,
  createKey,
  createServiceAccount,
  pollUntil,
  principalWithRoles,
  sleep,
  verify,
  withOneCharacterChanged,
  type KeyPrincipal,
} from './helpers/key-principals';
import { postGraphQL, startTestServer, testConfig, type TestServer } from './helpers/server';

/**
 * The verification cache (src/services/key-cache.ts) as a user of the API sees it: repeated
 * verifications are answered without PostgreSQL, yet every audited change to a key, its owner or a
 * role is in force on the very next verification; expiry needs no invalidation; the cache is
 * bounded; quota stays exact; and a lost change feed empties and disables the cache.
 */

const pepper = randomBytes(32).toString('base64url');
let t: TestServer;
let verifier: KeyPrincipal;
let memberRoleId: string;
let ownerId: string;

before(async () => {
  // The pepper is chosen here so a second instance can share this database (cross-instance test).
  t = await startTestServer({ keyPepper: pepper });
  verifier = await principalWithRoles(t, ['verifier'], 'cache-verifier');
  memberRoleId = await roleIdByName(t, 'member');
  ownerId = await createHuman(t, [memberRoleId], 'cache-owner');
  // The verifier's own key is then cached: stats below count only the verified keys' lookups.
  assert.equal((await verify(t, verifier.key, { key: generateKey('kl') })).code, 'NOT_FOUND');
});
after(() => t.close());

const cache = () => t.server.services.verification.cache;
const stats = () => ({ ...cache().stats });
const check = (input: VerifyKeyInput) => verify(t, verifier.key, input);
const keyFor = (input: Partial<CreateApiKeyInput>) => createKey(t, { ownerId, name: unique('cached'), ...input });

/** A counter or gauge value from GET /metrics (the first sample whose line starts with `series`). */
async function metric(baseUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `/metrics has ${series}`);
  return Number(line.slice(series.length + 1));
}

/**
 * SQL statements the server sent while `work` ran, as /metrics counts them. Buffered usage is
 * flushed first, and the least of three runs is taken, so the 200 ms usage flush and the 1 s
 * background seal pass cannot be mistaken for work of the request.
 */
async function fewestQueriesDuring(work: () => Promise<void>): Promise<number> {
  let fewest = Infinity;
  for (let i = 0; i < 3; i++) {
    await t.server.services.usage.flush();
    const before = await metric(t.baseUrl, 'keyledger_db_queries_total');
    await work();
    const after = await metric(t.baseUrl, 'keyledger_db_queries_total');
    fewest = Math.min(fewest, after - before);
  }
  return fewest;
}

/** Verifies VALID twice, the second time from the cache: the key is warm before a change. */
async function warm(secret: string, input: Omit<VerifyKeyInput, 'key'> = {}): Promise<void> {
  assert.equal((await check({ key: secret, ...input })).code, 'VALID', 'first verification');
  const before = stats();
  assert.equal((await check({ key: secret, ...input })).code, 'VALID', 'second verification');
  const after = stats();
  assert.equal(after.misses, before.misses, 'the second verification is not a cache miss');
  assert.ok(after.hits >= before.hits + 2, 'the caller and the verified key come from the cache');
}

test('the cache is on while the change feed is up', () => {
  assert.equal(cache().enabled, true);
});

test('a key verified twice: the second verification is answered from the cache, without PostgreSQL', async () => {
  const { secret, key } = await keyFor({ name: 'twice', permissions: ['*'] });
  const s0 = stats();
  const first = await check({ key: secret });
  assert.equal(first.code, 'VALID');
  const s1 = stats();
  assert.equal(s1.misses, s0.misses + 1, 'the first verification of a new key misses the cache');

  const second = await check({ key: secret });
  const s2 = stats();
  assert.deepEqual(second, first, 'the cached answer is the same answer');
  assert.equal(second.keyId, key.id);
  assert.equal(s2.misses, s1.misses, 'no miss the second time');
  assert.equal(s2.hits, s1.hits + 2, "both the caller's key and the verified key were cache hits");

  // Observable from outside: a verification of a warm key sends no SQL at all.
  const queries = await fewestQueriesDuring(async () => {
    assert.equal((await check({ key: secret })).code, 'VALID');
  });
  assert.equal(queries, 0, 'a warm verification sends no statement to PostgreSQL');

  // ...whereas a cold key costs at least one lookup (so the measure above can see queries).
  const { secret: fresh } = await keyFor({ name: 'cold' });
  const beforeCold = await metric(t.baseUrl, 'keyledger_db_queries_total');
  assert.equal((await check({ key: fresh })).code, 'VALID');
  const afterCold = await metric(t.baseUrl, 'keyledger_db_queries_total');
  assert.ok(afterCold - beforeCold >= 1, `a cold verification queried ${afterCold - beforeCold} times`);
});

test('a cold key verified by many requests at once is looked up once; a lookup begun before a change is not shared after it', async () => {
  const { secret } = await keyFor({ name: 'stampede' });
  const verification = t.server.services.verification;
  // The key lookups waiting on a lock this test holds on api_keys: each is one statement sent.
  const lookupsWaiting = async () =>
    (await t.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%k.stored_status, k.expires_at%'`,
    ))[0]!.n;
  const locker = new Client({ connectionString: t.db.url });
  await locker.connect();
  try {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE');
    const concurrent = Array.from({ length: 10 }, () => verification.verify(secret, {}));
    await pollUntil(lookupsWaiting, (n) => n >= 1, { timeoutMs: 5000, what: 'the lookup to wait on the lock' });
    await sleep(200);
    assert.equal(await lookupsWaiting(), 1, 'ten concurrent verifications of one cold key send one lookup');

    // Any change moves the cache to a new epoch: the lookup in flight may have read the row
    // before it, so a verification from now on sends its own.
    cache().invalidate({ kind: 'user', id: randomUUID() });
    const afterChange = verification.verify(secret, {});
    await pollUntil(lookupsWaiting, (n) => n >= 2, { timeoutMs: 5000, what: 'a second lookup after the change' });
    await locker.query('ROLLBACK');
    const outcomes = await Promise.all([...concurrent, afterChange]);
    assert.deepEqual(new Set(outcomes.map((o) => o.code)), new Set(['VALID']));
  } finally {
    await locker.end();
  }
});

test('revokeApiKey: the very next verification of a warm key is REVOKED', async () => {
  const { secret, key } = await keyFor({ name: 'to-revoke' });
  await warm(secret);
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'cache test' });
  const result = await check({ key: secret });
  assert.equal(result.code, 'REVOKED');
  assert.equal(result.valid, false);
  assert.equal(result.keyId, key.id);
});

test('disableApiKey / enableApiKey: DISABLED at once, VALID at once again', async () => {
  const { secret, key } = await keyFor({ name: 'to-disable' });
  await warm(secret);
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id });
  assert.equal((await check({ key: secret })).code, 'DISABLED');
  assert.equal((await check({ key: secret })).code, 'DISABLED', 'and stays so from the cache');
  await t.ok(t.adminKey, KtEnableKeyDocument, { id: key.id });
  assert.equal((await check({ key: secret })).code, 'VALID');
});

test('updateApiKey adding allowedCidrs: IP_NOT_ALLOWED on the very next verification', async () => {
  const { secret, key } = await keyFor({ name: 'to-fence' });
  await warm(secret, { ip: '192.168.1.1' });
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { allowedCidrs: ['10.0.0.0/8'] } });
  assert.equal((await check({ key: secret, ip: '192.168.1.1' })).code, 'IP_NOT_ALLOWED');
  assert.equal((await check({ key: secret, ip: '10.1.2.3' })).code, 'VALID');
});

test('updateApiKey lowering permissions: INSUFFICIENT_PERMISSIONS on the very next verification', async () => {
  const writerRole = (
    await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('ledger'), permissions: ['ledger:*'] } })
  ).createRole;
  const humanId = await createHuman(t, [memberRoleId, writerRole.id], 'ledger-owner');
  const { secret, key } = await createKey(t, { ownerId: humanId, name: 'ledger-key', permissions: ['ledger:*'] });
  await warm(secret, { permissions: ['ledger:write'] });
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { permissions: ['ledger:read'] } });
  const lowered = await check({ key: secret, permissions: ['ledger:write'] });
  assert.equal(lowered.code, 'INSUFFICIENT_PERMISSIONS');
  assert.deepEqual((await check({ key: secret })).permissions, ['ledger:read']);

  // Changing a key's metadata is seen at once too (any field of the record, not only the status).
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { metadata: { tier: 'gold' } } });
  assert.deepEqual((await check({ key: secret })).metadata, { tier: 'gold' });
});

test("disableUser of the owner: OWNER_DISABLED at once, for the owner's keys and its service accounts' keys", async () => {
  const humanId = await createHuman(t, [memberRoleId], 'leaving');
  const own = await createKey(t, { ownerId: humanId, name: 'own' });
  const svcId = await createServiceAccount(t, humanId, [], 'leaving-svc');
  const svcKey = await createKey(t, { ownerId: svcId, name: 'svc' });
  await warm(own.secret);
  await warm(svcKey.secret);
  await t.ok(t.adminKey, KtDisableUserDocument, { id: humanId, reason: 'cache test' });
  assert.equal((await check({ key: own.secret })).code, 'OWNER_DISABLED');
  assert.equal((await check({ key: svcKey.secret })).code, 'OWNER_DISABLED', "a service account's human was disabled");
  await t.ok(t.adminKey, EnableUserDocument, { id: humanId });
  assert.equal((await check({ key: own.secret })).code, 'VALID');
  assert.equal((await check({ key: svcKey.secret })).code, 'VALID');
});

test('unassignRole / assignRole on the owner: permissions narrow and widen on the very next verification', async () => {
  const role = (
    await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('billing'), permissions: ['invoices:*'] } })
  ).createRole;
  const humanId = await createHuman(t, [memberRoleId, role.id], 'billing-owner');
  const { secret } = await createKey(t, { ownerId: humanId, name: 'billing-key', permissions: ['*'] });
  await warm(secret, { permissions: ['invoices:read'] });
  await t.ok(t.adminKey, KtUnassignRoleDocument, { userId: humanId, roleId: role.id });
  const narrowed = await check({ key: secret, permissions: ['invoices:read'] });
  assert.equal(narrowed.code, 'INSUFFICIENT_PERMISSIONS');
  assert.ok(!narrowed.permissions.includes('invoices:*'));
  // Warm the refusal, then give the role back.
  assert.equal((await check({ key: secret, permissions: ['invoices:read'] })).code, 'INSUFFICIENT_PERMISSIONS');
  await t.ok(t.adminKey, KtAssignRoleDocument, { userId: humanId, roleId: role.id });
  assert.equal((await check({ key: secret, permissions: ['invoices:read'] })).code, 'VALID');
});

test("updateRole removing a permission: INSUFFICIENT_PERMISSIONS at once, through the owner's role and the key's role", async () => {
  const role = (
    await t.ok(t.adminKey, KtCreateRoleDocument, {
      input: { name: unique('reports'), permissions: ['reports:read', 'reports:export'] },
    })
  ).createRole;
  const humanId = await createHuman(t, [memberRoleId, role.id], 'reports-owner');
  const viaOwner = await createKey(t, { ownerId: humanId, name: 'via-owner', permissions: ['*'] });
  const viaKeyRole = await createKey(t, { ownerId: humanId, name: 'via-key-role', roleIds: [role.id] });
  await warm(viaOwner.secret, { permissions: ['reports:export'] });
  await warm(viaKeyRole.secret, { permissions: ['reports:export'] });
  await t.ok(t.adminKey, UpdateRoleDocument, { id: role.id, input: { permissions: ['reports:read'] } });
  assert.equal((await check({ key: viaOwner.secret, permissions: ['reports:export'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await check({ key: viaKeyRole.secret, permissions: ['reports:export'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await check({ key: viaKeyRole.secret, permissions: ['reports:read'] })).code, 'VALID');
});

test("revokeAllApiKeys: every key of the user and of its service accounts is REVOKED at once", async () => {
  const humanId = await createHuman(t, [memberRoleId], 'compromised');
  const own = await createKey(t, { ownerId: humanId, name: 'own' });
  const svcId = await createServiceAccount(t, humanId, [], 'compromised-svc');
  const svcKey = await createKey(t, { ownerId: svcId, name: 'svc' });
  await warm(own.secret);
  await warm(svcKey.secret);
  await t.ok(t.adminKey, KtRevokeAllKeysDocument, { userId: humanId, reason: 'cache test' });
  assert.equal((await check({ key: own.secret })).code, 'REVOKED');
  assert.equal((await check({ key: svcKey.secret })).code, 'REVOKED');
});

test('a changed key is refused at once by the API itself too (authentication shares the cache)', async () => {
  const { secret, key } = await keyFor({ name: 'api-caller', permissions: ['*'] });
  const viewer = '{ viewer { user { id } } }';
  assert.equal((await postGraphQL(t.url, secret, viewer)).status, 200);
  assert.equal((await postGraphQL(t.url, secret, viewer)).status, 200);
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id });
  assert.equal((await postGraphQL(t.url, secret, viewer)).status, 401);
});

test('a warm key that expires answers EXPIRED, from the cache, without any invalidation', async () => {
  const expiresAt = new Date(Date.now() + 2000).toISOString();
  const { secret } = await keyFor({ name: 'expiring', expiresAt });
  await warm(secret);
  const before = stats();
  await sleep(Math.max(0, new Date(expiresAt).getTime() - Date.now()) + 100);
  const result = await check({ key: secret });
  const after = stats();
  assert.equal(result.code, 'EXPIRED');
  assert.equal(result.valid, false);
  assert.equal(after.invalidations, before.invalidations, 'nothing was invalidated');
  assert.equal(after.misses, before.misses, 'the expired answer came from the cached record');
});

test('rotateApiKey with grace 0: the warm old key is EXPIRED at once, the successor verifies', async () => {
  const { secret, key } = await keyFor({ name: 'rotating', permissions: ['*'] });
  await warm(secret);
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: key.id, gracePeriodSeconds: 0 })).rotateApiKey;
  const old = await check({ key: secret });
  assert.equal(old.code, 'EXPIRED');
  assert.equal(old.keyId, key.id);
  const successor = await check({ key: rotated.secret });
  assert.equal(successor.code, 'VALID');
  assert.equal(successor.keyId, rotated.apiKey.id);
});

test('rotateApiKey with a grace period: the warm old key verifies until the grace ends, then EXPIRED', async () => {
  const { secret, key } = await keyFor({ name: 'rotating-grace' });
  await warm(secret);
  const rotatedAt = Date.now();
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: key.id, gracePeriodSeconds: 2 })).rotateApiKey;
  const during = await check({ key: secret });
  if (Date.now() < rotatedAt + 1900) {
    assert.equal(during.code, 'VALID', 'within the grace period the old key still verifies');
    assert.ok(during.expiresAt, 'the old key now has an expiry');
  }
  assert.equal((await check({ key: rotated.secret })).code, 'VALID');
  const { value, at } = await pollUntil(
    async () => (await check({ key: secret })).code,
    (code) => code !== 'VALID',
    { timeoutMs: 6000, intervalMs: 100, what: 'the grace period to end' },
  );
  assert.equal(value, 'EXPIRED');
  assert.ok(at >= rotatedAt + 2000 - 50, `expired ${at - rotatedAt} ms after the rotation`);
  assert.equal((await check({ key: rotated.secret })).code, 'VALID');
});

test('negative cache: a well-formed unknown key is NOT_FOUND twice, the second time from the negative cache', async () => {
  const unknown = generateKey('kl');
  const s0 = stats();
  assert.equal((await check({ key: unknown })).code, 'NOT_FOUND');
  const s1 = stats();
  assert.equal(s1.negativeHits, s0.negativeHits, 'first lookup: not yet known to be missing');
  const second = await check({ key: unknown });
  assert.equal(second.code, 'NOT_FOUND');
  assert.equal(second.keyId, null);
  const s2 = stats();
  assert.equal(s2.negativeHits, s1.negativeHits + 1, 'second lookup: a negative hit');
  assert.equal(s2.misses, s1.misses, 'and not a miss');

  // A malformed key is refused before any cache or database work.
  const { secret } = await keyFor({ name: 'typo-source' });
  const s3 = stats();
  const malformed = await check({ key: withOneCharacterChanged(secret) });
  assert.equal(malformed.code, 'MALFORMED');
  assert.equal((await check({ key: 'not a key' })).code, 'MALFORMED');
  const s4 = stats();
  assert.equal(s4.negativeHits, s3.negativeHits, 'MALFORMED does not touch the negative cache');
  assert.equal(s4.misses, s3.misses, 'MALFORMED does not look anything up');
  assert.equal(s4.hits, s3.hits + 2, "only the caller's own key was looked up (a hit), once per request");
});

test('quota stays exact with a warm cached key: 8 concurrent verifications of 5 left give exactly 5 VALID', async () => {
  const { secret, key } = await keyFor({ name: 'quota', remaining: 6 });
  const first = await check({ key: secret });
  assert.equal(first.code, 'VALID');
  assert.equal(first.remaining, 5);
  const s0 = stats();
  const results = await Promise.all(
    Array.from({ length: 8 }, () => t.request(verifier.key, KtVerifyDocument, { input: { key: secret } })),
  );
  for (const r of results) assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  const codes = results.map((r) => r.data!.verifyKey.code);
  assert.equal(codes.filter((c) => c === 'VALID').length, 5, JSON.stringify(codes));
  assert.equal(codes.filter((c) => c === 'USAGE_EXCEEDED').length, 3, JSON.stringify(codes));
  const left = results.filter((r) => r.data!.verifyKey.code === 'VALID').map((r) => r.data!.verifyKey.remaining!);
  assert.deepEqual([...left].sort((a, b) => a - b), [0, 1, 2, 3, 4], 'each VALID saw a different quota left');
  assert.ok(stats().hits > s0.hits, 'the key was served from the cache meanwhile');
  assert.equal((await check({ key: secret })).code, 'USAGE_EXCEEDED');
  assert.equal((await t.ok(t.adminKey, KtKeyDocument, { id: key.id })).apiKey!.remaining, 0);

  // A new quota is in force at once, and counted exactly.
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { remaining: 2 } });
  const a = await check({ key: secret });
  assert.equal(a.code, 'VALID');
  assert.equal(a.remaining, 1);
  const b = await check({ key: secret });
  assert.equal(b.code, 'VALID');
  assert.equal(b.remaining, 0);
  const c = await check({ key: secret });
  assert.equal(c.code, 'USAGE_EXCEEDED');
  assert.equal(c.remaining, 0);
  assert.equal((await t.ok(t.adminKey, KtKeyDocument, { id: key.id })).apiKey!.remaining, 0);
});

test('the bound: with keyCacheSize 5 the cache never holds more than 5 keys, and every key still verifies', async () => {
  const small = await startTestServer({ keyCacheSize: 5 });
  try {
    const smallCache = small.server.services.verification.cache;
    assert.equal(smallCache.enabled, true);
    const secrets: string[] = [];
    for (let i = 0; i < 20; i++) {
      const created = await small.ok(small.adminKey, KtCreateKeyDocument, { input: { name: `bounded-${i}` } });
      secrets.push(created.createApiKey.secret);
    }
    for (const secret of secrets) {
      const result = (await small.ok(small.adminKey, KtVerifyDocument, { input: { key: secret } })).verifyKey;
      assert.equal(result.code, 'VALID');
      assert.ok(smallCache.size <= 5, `cache holds ${smallCache.size} records`);
    }
    assert.ok(smallCache.size > 0, 'the small cache is in use');
    assert.ok((await metric(small.baseUrl, 'keyledger_key_cache_entries')) <= 5, '/metrics agrees');
    // Evicted keys are read again and still verify; the latest key is warm.
    for (const secret of secrets) {
      assert.equal((await small.ok(small.adminKey, KtVerifyDocument, { input: { key: secret } })).verifyKey.code, 'VALID');
    }
    assert.ok(smallCache.size <= 5);
    const before = { ...smallCache.stats };
    await small.ok(small.adminKey, KtVerifyDocument, { input: { key: secrets[19]! } });
    assert.equal(smallCache.stats.misses, before.misses, 'the most recently used key is still cached');
  } finally {
    await small.close();
  }
});

test('keyCacheSize 0 turns the cache off: nothing is cached and verification still works', async () => {
  const off = await startTestServer({ keyCacheSize: 0 });
  try {
    const offCache = off.server.services.verification.cache;
    assert.equal(offCache.enabled, false);
    const created = await off.ok(off.adminKey, KtCreateKeyDocument, { input: { name: 'uncached' } });
    for (let i = 0; i < 3; i++) {
      const result = (await off.ok(off.adminKey, KtVerifyDocument, { input: { key: created.createApiKey.secret } })).verifyKey;
      assert.equal(result.code, 'VALID');
    }
    assert.equal(offCache.size, 0);
    assert.equal(offCache.stats.hits, 0);
    await off.ok(off.adminKey, KtRevokeKeyDocument, { id: created.createApiKey.apiKey.id, reason: 'off' });
    assert.equal((await off.ok(off.adminKey, KtVerifyDocument, { input: { key: created.createApiKey.secret } })).verifyKey.code, 'REVOKED');
  } finally {
    await off.close();
  }
});

test('another instance on the same database drops its cached record when this one changes the key (NOTIFY)', async () => {
  const sink = new Writable({ write: (_chunk, _encoding, done) => done() });
  const other = await startServer(testConfig(t.db.url, { keyPepper: pepper, bootstrapAdminKey: null }), {
    logDestination: sink,
    announce: () => {},
  });
  try {
    const otherCache = other.services.verification.cache;
    assert.equal(otherCache.enabled, true);
    const { secret, key } = await keyFor({ name: 'shared' });
    const verifyThere = async () => {
      const response = await postGraphQL<{ verifyKey: { code: string } }>(
        other.url,
        verifier.key,
        'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } }',
        { input: { key: secret } },
      );
      assert.equal(response.errors, undefined, JSON.stringify(response.errors));
      return response.data!.verifyKey.code;
    };
    assert.equal(await verifyThere(), 'VALID');
    const before = { ...otherCache.stats };
    assert.equal(await verifyThere(), 'VALID');
    assert.equal(otherCache.stats.misses, before.misses, 'the other instance answers from its cache');
    assert.ok(otherCache.stats.hits > before.hits);

    const invalidationsBefore = otherCache.stats.invalidations;
    await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'cross-instance' });
    const { value } = await pollUntil(verifyThere, (code) => code !== 'VALID', {
      timeoutMs: 3000,
      intervalMs: 20,
      what: 'the other instance to hear the revocation',
    });
    assert.equal(value, 'REVOKED');
    assert.ok(otherCache.stats.invalidations > invalidationsBefore, 'the other instance was told through NOTIFY');
  } finally {
    await other.close();
  }
});

test('when the change feed connection drops, the cache is emptied and off until it reconnects; changes made meanwhile are seen', async () => {
  assert.equal(cache().enabled, true);
  const bySql = await keyFor({ name: 'missed-notice' });
  const byApi = await keyFor({ name: 'revoked-while-down' });
  await warm(bySql.secret);
  await warm(byApi.secret);
  const unknown = generateKey('kl');
  assert.equal((await check({ key: unknown })).code, 'NOT_FOUND');
  assert.equal((await check({ key: unknown })).code, 'NOT_FOUND');
  assert.ok(cache().size > 0);

  // Kill the LISTEN connection and watch for the window before it reconnects (about 100 ms): the
  // server runs in this process, so a loop yielding to I/O sees the state between the two events.
  const listenerPids = async () =>
    t.db.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'keyledger-listener' AND datname = current_database()`,
    );
  assert.equal((await listenerPids()).length, 1, 'exactly one listener connection on this database');
  let seenDown = false;
  for (let attempt = 0; attempt < 3 && !seenDown; attempt++) {
    // A retry (the window was missed) first waits for the listener to be back.
    if (attempt > 0) {
      await pollUntil(listenerPids, (rows) => rows.length === 1 && cache().enabled, { timeoutMs: 8000, what: 'the listener' });
    }
    const killed = await t.db.query<{ killed: boolean }>(
      `SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
        WHERE application_name = 'keyledger-listener' AND datname = current_database()`,
    );
    assert.deepEqual(killed, [{ killed: true }], 'the listener connection was terminated');
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) {
      if (!cache().enabled) {
        seenDown = true;
        assert.equal(cache().size, 0, 'the cache is empty while disabled');
        break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  assert.ok(seenDown, 'the cache was disabled when the LISTEN connection dropped');

  // A change whose notification this instance cannot hear (another instance's, made while the
  // feed is down: here, straight in SQL with no NOTIFY), and one made through this instance.
  await t.db.query(`UPDATE api_keys SET stored_status = 'REVOKED', revoked_at = now() WHERE id = $1`, [bySql.key.id]);
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: byApi.key.id, reason: 'while the feed is down' });

  await pollUntil(async () => cache().enabled, (enabled) => enabled, {
    timeoutMs: 8000,
    intervalMs: 20,
    what: 'the change feed to reconnect',
  });
  assert.equal((await listenerPids()).length, 1, 'listening again on a new connection');

  assert.equal((await check({ key: bySql.secret })).code, 'REVOKED', 'no record cached before the drop survives it');
  assert.equal((await check({ key: byApi.secret })).code, 'REVOKED');
  const s0 = stats();
  assert.equal((await check({ key: unknown })).code, 'NOT_FOUND');
  const s1 = stats();
  assert.equal(s1.negativeHits, s0.negativeHits, 'the negative cache was emptied too');
  assert.equal(s1.misses, s0.misses + 1);

  // And it caches again, with invalidation working over the new connection.
  const fresh = await keyFor({ name: 'after-reconnect' });
  await warm(fresh.secret);
  assert.ok(cache().size > 0);
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: fresh.key.id });
  assert.equal((await check({ key: fresh.secret })).code, 'DISABLED');
});
