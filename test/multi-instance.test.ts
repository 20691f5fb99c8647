import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test, type TestContext } from 'node:test';
import { generateKey } from '../src/auth/key-format';
import {
  MiCreateKeyDocument,
  MiCreateRoleDocument,
  MiCreateUserDocument,
  MiDisableUserDocument,
  MiKeyStateDocument,
  MiRevokeKeyDocument,
  MiRolesDocument,
  MiUnassignRoleDocument,
  MiUpdateRoleDocument,
  MiVerifyDocument,
  MiVerifyManyDocument,
  type CreateApiKeyInput,
  type MiVerifyQuery,
  type VerifyKeyInput,
} from './generated/graphql';
import { Cluster, queryText, redisForTests, sleep, type Instance } from './helpers/cluster';
import { createTestDatabase, type TestDatabase } from './helpers/database';
import { runToExit } from './helpers/process';
import { postGraphQL } from './helpers/server';

/**
 * Scale-out: several real server processes on one database. Key records are cached per instance
 * and invalidated through LISTEN/NOTIFY, quotas are decremented in PostgreSQL, rate limits are
 * shared through Redis when REDIS_URL is set, and usage is buffered in memory and flushed on SIGTERM.
 */

type VerifyNode = MiVerifyQuery['verifyKey'];

const PEPPER = randomBytes(32).toString('base64url');
const ADMIN_KEY = generateKey('kl');
/** How long a change made on one instance may take to be in force on another. */
const PROPAGATION_LIMIT_MS = 1000;

const cluster = new Cluster();
let db: TestDatabase;
let A: Instance;
let B: Instance;
let env: Record<string, string>;
let roleIdsByName: Map<string, string>;
/** A service calling verifyKey: a human with the verifier role and a '*' key. */
let verifier: { userId: string; secret: string };

const unique = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

before(async () => {
  db = await createTestDatabase();
  env = { DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: ADMIN_KEY };
  // One after the other: the first start migrates and bootstraps the fresh database.
  A = await cluster.start('A', env);
  B = await cluster.start('B', env);
  roleIdsByName = new Map((await A.ok(ADMIN_KEY, MiRolesDocument)).roles.map((r) => [r.name, r.id]));
  const verifierId = await human(['verifier'], 'verifier');
  verifier = { userId: verifierId, secret: (await createKey({ ownerId: verifierId, name: 'verifier', permissions: ['*'] })).secret };
});

after(async () => {
  await cluster.stopAll();
  await db?.drop();
});

/** As admin on A: a human holding the roles (names of built-in roles, or ids of custom ones). */
async function human(roles: string[], label: string): Promise<string> {
  const name = unique(label);
  const roleIds = roles.map((r) => roleIdsByName.get(r) ?? r);
  return (await A.ok(ADMIN_KEY, MiCreateUserDocument, { input: { name, email: `${name}@example.test`, roleIds } })).createUser.id;
}

async function customRole(permissions: string[]): Promise<string> {
  return (await A.ok(ADMIN_KEY, MiCreateRoleDocument, { input: { name: unique('role'), permissions } })).createRole.id;
}

/** As admin on A: a key; returns its id and secret. */
async function createKey(input: CreateApiKeyInput): Promise<{ id: string; secret: string }> {
  const created = (await A.ok(ADMIN_KEY, MiCreateKeyDocument, { input })).createApiKey;
  return { id: created.apiKey.id, secret: created.secret };
}

async function verifyOn(instance: Instance, input: VerifyKeyInput, callerKey = verifier.secret): Promise<VerifyNode> {
  return (await instance.ok(callerKey, MiVerifyDocument, { input })).verifyKey;
}

async function cacheStats(instance: Instance): Promise<{ hits: number; misses: number }> {
  const samples = await instance.metrics();
  const hits = samples.get('keyledger_key_cache_lookups{result="hits"}');
  const misses = samples.get('keyledger_key_cache_lookups{result="misses"}');
  assert.ok(hits !== undefined && misses !== undefined, `${instance.name} exports its key cache lookups on /metrics`);
  return { hits, misses };
}

/**
 * `probe` succeeds on `instance`, then succeeds again from its key cache (no cache miss): the record
 * that must be invalidated is really cached there. (Should a late notice of the key's creation drop
 * the fresh entry in between, the pair is repeated: what matters is that it is cached now.)
 */
async function warm<T>(instance: Instance, probe: () => Promise<T>, isOk: (value: T) => boolean, what: string): Promise<void> {
  const first = await probe();
  assert.ok(isOk(first), `${what}: first call on ${instance.name}: ${JSON.stringify(first)}`);
  const attempts: string[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const before = await cacheStats(instance);
    const again = await probe();
    assert.ok(isOk(again), `${what}: repeated call on ${instance.name}: ${JSON.stringify(again)}`);
    const after = await cacheStats(instance);
    if (after.misses === before.misses && after.hits > before.hits) return;
    attempts.push(`hits +${after.hits - before.hits}, misses +${after.misses - before.misses}`);
  }
  assert.fail(`${what}: ${instance.name} never answered from its key cache (${attempts.join('; ')})`);
}

/**
 * Runs `change` (on A), then polls `probe` (on B) every ~10 ms until it answers `expected`.
 * Reports the delay between A answering the mutation and B's first `expected` answer, and fails
 * when it exceeds PROPAGATION_LIMIT_MS. Before that, only the old answer `stale` is acceptable.
 */
async function propagation(
  t: TestContext,
  what: string,
  change: () => Promise<unknown>,
  probe: () => Promise<string>,
  expected: string,
  stale: string,
): Promise<number> {
  const sent = performance.now();
  await change();
  const answered = performance.now();
  const staleAnswers: string[] = [];
  for (;;) {
    const value = await probe();
    const now = performance.now();
    if (value === expected) {
      const delay = now - answered;
      t.diagnostic(
        `${what}: B answered ${expected} ${delay.toFixed(1)} ms after A answered the mutation ` +
          `(mutation took ${(answered - sent).toFixed(1)} ms; ${staleAnswers.length} stale answers on B before)`,
      );
      assert.ok(delay <= PROPAGATION_LIMIT_MS, `${what}: B took ${delay.toFixed(0)} ms (limit ${PROPAGATION_LIMIT_MS} ms)`);
      return delay;
    }
    assert.equal(value, stale, `${what}: while the change propagates B answers either the old ${stale} or ${expected}`);
    staleAnswers.push(value);
    if (now - answered > 5 * PROPAGATION_LIMIT_MS) {
      assert.fail(`${what}: B still answered ${value} ${(now - answered).toFixed(0)} ms after A answered the mutation`);
    }
    await sleep(10);
  }
}

describe('a change on one instance is in force on another within 1 s', () => {
  test('revokeApiKey on A: B answers REVOKED', async (t) => {
    const ownerId = await human(['member'], 'revoke-owner');
    const key = await createKey({ ownerId, name: 'to-revoke' });
    const check = () => verifyOn(B, { key: key.secret });
    await warm(B, check, (r) => r.code === 'VALID', 'revoke');
    await propagation(
      t,
      'revokeApiKey',
      () => A.ok(ADMIN_KEY, MiRevokeKeyDocument, { id: key.id, reason: 'multi-instance test' }),
      async () => (await check()).code,
      'REVOKED',
      'VALID',
    );
  });

  test("disableUser of the key's owner on A: B answers OWNER_DISABLED", async (t) => {
    const ownerId = await human(['member'], 'leaver');
    const key = await createKey({ ownerId, name: 'leaver-key' });
    const check = () => verifyOn(B, { key: key.secret });
    await warm(B, check, (r) => r.code === 'VALID', 'disableUser');
    await propagation(
      t,
      'disableUser',
      () => A.ok(ADMIN_KEY, MiDisableUserDocument, { id: ownerId, reason: 'multi-instance test' }),
      async () => (await check()).code,
      'OWNER_DISABLED',
      'VALID',
    );
  });

  test('unassignRole on A removing the asked permission: B answers INSUFFICIENT_PERMISSIONS', async (t) => {
    const invoices = await customRole(['invoices:read', 'invoices:write']);
    const ownerId = await human(['member', invoices], 'role-loser');
    const key = await createKey({ ownerId, name: 'unassign-key', permissions: ['*'] });
    const check = () => verifyOn(B, { key: key.secret, permissions: ['invoices:read'] });
    await warm(B, check, (r) => r.code === 'VALID' && r.permissions.includes('invoices:read'), 'unassignRole');
    await propagation(
      t,
      'unassignRole',
      () => A.ok(ADMIN_KEY, MiUnassignRoleDocument, { userId: ownerId, roleId: invoices }),
      async () => (await check()).code,
      'INSUFFICIENT_PERMISSIONS',
      'VALID',
    );
  });

  test("updateRole on A dropping a permission the owner holds through it: B answers INSUFFICIENT_PERMISSIONS", async (t) => {
    const reports = await customRole(['reports:read', 'reports:write']);
    const ownerId = await human(['member', reports], 'role-narrowed');
    const key = await createKey({ ownerId, name: 'update-role-key', permissions: ['*'] });
    const check = () => verifyOn(B, { key: key.secret, permissions: ['reports:read'] });
    await warm(B, check, (r) => r.code === 'VALID', 'updateRole (owner role)');
    await propagation(
      t,
      'updateRole (role held by the owner)',
      () => A.ok(ADMIN_KEY, MiUpdateRoleDocument, { id: reports, input: { permissions: ['reports:write'] } }),
      async () => (await check()).code,
      'INSUFFICIENT_PERMISSIONS',
      'VALID',
    );
    // The permission that stayed still verifies on B.
    assert.equal((await verifyOn(B, { key: key.secret, permissions: ['reports:write'] })).code, 'VALID');
  });

  test('updateRole on A dropping a permission a key holds through the role: B answers INSUFFICIENT_PERMISSIONS', async (t) => {
    const docsOwner = await customRole(['docs:*']);
    const docsKeyRole = await customRole(['docs:read', 'docs:write']);
    const ownerId = await human(['member', docsOwner], 'key-role');
    const key = await createKey({ ownerId, name: 'key-role-key', roleIds: [docsKeyRole] });
    const check = () => verifyOn(B, { key: key.secret, permissions: ['docs:read'] });
    await warm(B, check, (r) => r.code === 'VALID', 'updateRole (key role)');
    await propagation(
      t,
      'updateRole (role on the key)',
      () => A.ok(ADMIN_KEY, MiUpdateRoleDocument, { id: docsKeyRole, input: { permissions: ['docs:write'] } }),
      async () => (await check()).code,
      'INSUFFICIENT_PERMISSIONS',
      'VALID',
    );
  });

  test('the calling key itself revoked on A: B answers 401 UNAUTHENTICATED', async (t) => {
    const callerId = await human(['verifier'], 'caller');
    const caller = await createKey({ ownerId: callerId, name: 'caller', permissions: ['*'] });
    const probeKey = generateKey('kl');
    const call = async () => {
      const response = await B.request(caller.secret, MiVerifyDocument, { input: { key: probeKey } });
      return `${response.status} ${response.data?.verifyKey.code ?? response.errors?.[0]?.extensions?.code}`;
    };
    await warm(B, call, (v) => v === '200 NOT_FOUND', 'calling key');
    await propagation(
      t,
      'revokeApiKey of the calling key',
      () => A.ok(ADMIN_KEY, MiRevokeKeyDocument, { id: caller.id, reason: 'multi-instance test' }),
      call,
      '401 UNAUTHENTICATED',
      '200 NOT_FOUND',
    );
  });
});

/** `count` concurrent verifications of `input`, alternating between the instances; results with their instance. */
async function concurrentVerifications(instances: Instance[], count: number, input: VerifyKeyInput) {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const instance = instances[i % instances.length]!;
      return { instance: instance.name, result: await verifyOn(instance, input) };
    }),
  );
}

function tally(results: Array<{ result: VerifyNode }>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const { result } of results) counts[result.code] = (counts[result.code] ?? 0) + 1;
  return counts;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const ascending = (values: number[]) => [...values].sort((a, b) => a - b);

describe('quotas are exact across instances without Redis', () => {
  for (const warmCaches of [false, true]) {
    test(`remaining 30, 60 concurrent verifications (30 on A, 30 on B, ${warmCaches ? 'warm' : 'cold'} caches): exactly 30 VALID`, async () => {
      const ownerId = await human(['member'], 'quota-owner');
      const key = await createKey({ ownerId, name: 'quota-30', remaining: 30 });
      if (warmCaches) {
        // A failed verification consumes nothing but caches the record (remaining 30) on each instance.
        for (const instance of [A, B]) {
          const refused = await verifyOn(instance, { key: key.secret, permissions: ['nothing:held'] });
          assert.equal(refused.code, 'INSUFFICIENT_PERMISSIONS');
          assert.equal(refused.remaining, 30);
        }
      }
      const results = await concurrentVerifications([A, B], 60, { key: key.secret });
      const counts = tally(results);
      assert.deepEqual(counts, { VALID: 30, USAGE_EXCEEDED: 30 }, JSON.stringify(counts));
      const remainders = results.filter((r) => r.result.code === 'VALID').map((r) => r.result.remaining!);
      assert.deepEqual(ascending(remainders), range(30), 'each VALID took its own unit of quota: remaining 29 down to 0, once each');
      assert.equal((await A.ok(ADMIN_KEY, MiKeyStateDocument, { id: key.id })).apiKey?.remaining, 0);
      assert.equal((await verifyOn(B, { key: key.secret })).code, 'USAGE_EXCEEDED');
      assert.equal((await verifyOn(A, { key: key.secret })).code, 'USAGE_EXCEEDED');
    });
  }

  test('without REDIS_URL rate limits are per instance: limit 10 per 60 s, 20 on each of A and B, 10 VALID on each', async (t) => {
    const ownerId = await human(['member'], 'local-limit');
    const key = await createKey({ ownerId, name: 'local-limit', rateLimit: { limit: 10, windowSeconds: 60 } });
    const results = await concurrentVerifications([A, B], 40, { key: key.secret });
    for (const name of ['A', 'B']) {
      const mine = results.filter((r) => r.instance === name);
      assert.deepEqual(tally(mine), { VALID: 10, RATE_LIMITED: 10 }, `${name}: ${JSON.stringify(tally(mine))}`);
    }
    t.diagnostic(`without Redis: ${tally(results).VALID} VALID of 40 for a limit of 10 (one window per instance)`);
  });
});

const redis = redisForTests();

describe('with REDIS_URL: rate limits shared across instances', { skip: redis.skip }, () => {
  let RA: Instance;
  let RB: Instance;
  before(async () => {
    RA = await cluster.start('RA', { ...env, REDIS_URL: redis.url! });
    RB = await cluster.start('RB', { ...env, REDIS_URL: redis.url! });
  });
  after(async () => {
    // Stopped by the file's after() too; stopping here frees them for the tests below.
    await Promise.all([RA, RB].filter(Boolean).map((i) => i.process.stop()));
  });

  test('rateLimit {limit: 10, windowSeconds: 60}, 40 concurrent across both: exactly 10 VALID and 30 RATE_LIMITED', async () => {
    const ownerId = await human(['member'], 'shared-limit');
    const key = await createKey({ ownerId, name: 'shared-limit', rateLimit: { limit: 10, windowSeconds: 60 } });
    const results = await concurrentVerifications([RA, RB], 40, { key: key.secret });
    const counts = tally(results);
    assert.deepEqual(counts, { VALID: 10, RATE_LIMITED: 30 }, JSON.stringify(counts));
    const left = results.filter((r) => r.result.code === 'VALID').map((r) => r.result.rateLimit!.remaining);
    assert.deepEqual(ascending(left), range(10), 'one shared window: remaining 9 down to 0, once each');
    // The window stays spent on both, sequentially too.
    assert.equal((await verifyOn(RA, { key: key.secret })).code, 'RATE_LIMITED');
    assert.equal((await verifyOn(RB, { key: key.secret })).code, 'RATE_LIMITED');
  });

  test('quota stays exact in Redis mode: remaining 15, 40 concurrent across both: exactly 15 VALID', async () => {
    const ownerId = await human(['member'], 'redis-quota');
    const key = await createKey({ ownerId, name: 'redis-quota', remaining: 15 });
    const results = await concurrentVerifications([RA, RB], 40, { key: key.secret });
    const counts = tally(results);
    assert.deepEqual(counts, { VALID: 15, USAGE_EXCEEDED: 25 }, JSON.stringify(counts));
    const remainders = results.filter((r) => r.result.code === 'VALID').map((r) => r.result.remaining!);
    assert.deepEqual(ascending(remainders), range(15));
    assert.equal((await A.ok(ADMIN_KEY, MiKeyStateDocument, { id: key.id })).apiKey?.remaining, 0);
  });
});

describe('SIGTERM under load loses no usage record', () => {
  const SINGLE = queryText(MiVerifyDocument);
  const MANY = queryText(MiVerifyManyDocument);
  const BATCH = 20;

  interface Fired {
    /** Verifications in requests answered 200 with every result VALID */
    answered: number;
    /** Verifications in requests that got no response (connection refused or reset) */
    unanswered: number;
    /** Requests answered with anything else */
    problems: string[];
    /** The first few connection errors, for the diagnostics */
    errors: string[];
  }

  /** `singles` verifyKey and `batches` verifyKeys(20) requests at once; `onSettled` hears each request end. */
  async function fire(url: string, secret: string, singles: number, batches: number, onSettled: () => void = () => {}): Promise<Fired> {
    const fired: Fired = { answered: 0, unanswered: 0, problems: [], errors: [] };
    const requests: Array<Promise<void>> = [];
    const send = async (size: number) => {
      try {
        const response =
          size === 1
            ? await postGraphQL<{ verifyKey: VerifyNode }>(url, verifier.secret, SINGLE, { input: { key: secret, resource: 'sigterm' } })
            : await postGraphQL<{ verifyKeys: VerifyNode[] }>(url, verifier.secret, MANY, {
                inputs: Array.from({ length: size }, () => ({ key: secret, resource: 'sigterm' })),
              });
        const results = response.data ? ('verifyKey' in response.data ? [response.data.verifyKey] : response.data.verifyKeys) : [];
        if (response.status === 200 && results.length === size && results.every((r) => r.valid)) fired.answered += size;
        else fired.problems.push(`HTTP ${response.status}: ${JSON.stringify(response.errors ?? response.data).slice(0, 300)}`);
      } catch (error) {
        // No response: the request may or may not have been verified (and recorded) by the server.
        fired.unanswered += size;
        if (fired.errors.length < 5) fired.errors.push(String((error as Error).cause ?? error));
      } finally {
        onSettled();
      }
    };
    // Interleaved so batches are in flight beside the single verifications.
    const every = batches > 0 ? Math.floor((singles + batches) / batches) : Infinity;
    let batchesLeft = batches;
    for (let i = 0; i < singles + batches; i++) {
      const batch = batchesLeft > 0 && (i % every === every - 1 || singles + batches - i <= batchesLeft);
      if (batch) batchesLeft--;
      requests.push(send(batch ? BATCH : 1));
    }
    await Promise.all(requests);
    return fired;
  }

  async function usageRows(keyId: string): Promise<{ total: number; valid: number }> {
    const [row] = await db.query<{ total: number; valid: number }>(
      `SELECT coalesce(sum(occurrences), 0)::int AS total, coalesce(sum(occurrences) FILTER (WHERE code = 'VALID'), 0)::int AS valid
         FROM usage_events WHERE key_id = $1`,
      [keyId],
    );
    return row!;
  }

  async function startAlone(name: string) {
    const instance = await cluster.start(name, env);
    const exited = once(instance.process.child, 'exit').then(([code, signal]) => ({
      code: code as number | null,
      signal: signal as NodeJS.Signals | null,
    }));
    return { instance, exited };
  }

  type Exit = { code: number | null; signal: NodeJS.Signals | null };

  async function exitWithin(exited: Promise<Exit>, ms: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        exited,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the process did not exit within ${ms} ms of SIGTERM`)), ms))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  test('2,000 verifications answered, SIGTERM right after the last response: exactly 2,000 usage rows', { timeout: 120_000 }, async (t) => {
    const ownerId = await human(['member'], 'sigterm-owner');
    const key = await createKey({ ownerId, name: 'sigterm-key' });
    const { instance, exited } = await startAlone('S1');
    const total = { answered: 0, unanswered: 0, problems: [] as string[] };
    let lastWaveStarted = 0;
    // 10 waves of 100 verifyKey + 5 verifyKeys(20) requests at once: 200 verifications each.
    for (let wave = 0; wave < 10; wave++) {
      lastWaveStarted = Date.now();
      const fired = await fire(instance.url, key.secret, 100, 5);
      total.answered += fired.answered;
      total.unanswered += fired.unanswered;
      total.problems.push(...fired.problems);
    }
    // Every response is in; SIGTERM before the 200 ms flush timer can have written the last records.
    instance.process.child.kill('SIGTERM');
    const signalled = performance.now();
    const atSignal = await usageRows(key.id);
    const exit = await exitWithin(exited, 30_000);
    const shutdownMs = performance.now() - signalled;
    assert.deepEqual(total.problems, [], 'every request was answered 200 with VALID results');
    assert.equal(total.unanswered, 0);
    assert.equal(total.answered, 2000);
    const rows = await usageRows(key.id);
    t.diagnostic(
      `usage rows: ${atSignal.total} written when SIGTERM was sent, ${rows.total} after exit, ${total.answered} answered; ` +
        `exit ${JSON.stringify(exit)} ${shutdownMs.toFixed(0)} ms after SIGTERM`,
    );
    assert.equal(rows.total, total.answered, `one usage row per answered verification, none lost, none extra (exit ${JSON.stringify(exit)})`);
    assert.equal(rows.valid, total.answered);
    const [state] = await db.query<{ last_used_at: Date | null }>('SELECT last_used_at FROM api_keys WHERE id = $1', [key.id]);
    assert.ok(state!.last_used_at, 'lastUsedAt written by the final flush');
    assert.ok(
      state!.last_used_at.getTime() >= lastWaveStarted - 5,
      `lastUsedAt ${state!.last_used_at.toISOString()} is from the last wave (exit ${JSON.stringify(exit)})`,
    );
    assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM shuts down cleanly: exit code 0, not killed by the signal');
  });

  test('SIGTERM while requests are in flight: every answered verification is recorded', { timeout: 120_000 }, async (t) => {
    const ownerId = await human(['member'], 'sigterm-flight-owner');
    const key = await createKey({ ownerId, name: 'sigterm-flight-key' });
    const { instance, exited } = await startAlone('S2');
    const warmup = await fire(instance.url, key.secret, 200, 5);
    assert.deepEqual(warmup.problems, []);
    assert.equal(warmup.answered, 300);
    // The last wave: SIGTERM once a third of its 310 requests have settled.
    let settled = 0;
    const last = await fire(instance.url, key.secret, 300, 10, () => {
      if (++settled === 100) instance.process.child.kill('SIGTERM');
    });
    const exit = await exitWithin(exited, 30_000);
    const answered = warmup.answered + last.answered;
    const rows = await usageRows(key.id);
    t.diagnostic(
      `last wave: ${last.answered} verifications answered, ${last.unanswered} without a response, ` +
        `${last.problems.length} other answers; usage rows ${rows.total} for ${answered} answered in all; ` +
        `errors seen: ${JSON.stringify(last.errors)}; exit ${JSON.stringify(exit)}`,
    );
    assert.ok(last.answered >= 100, 'the requests settled before the signal were answered');
    assert.ok(rows.total >= answered, `every answered verification is recorded: ${rows.total} rows < ${answered} answered`);
    assert.ok(
      rows.total <= answered + last.unanswered + last.problems.length * BATCH,
      `no usage row without a verification: ${rows.total} rows > ${answered} answered + ${last.unanswered} in flight`,
    );
    assert.equal(rows.valid, rows.total, 'all of them VALID');
    assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM shuts down cleanly: exit code 0, not killed by the signal');
  });

  test('SIGTERM while mutations are in flight: each one that commits is answered, with its audit event', { timeout: 120_000 }, async (t) => {
    const { instance, exited } = await startAlone('S3');
    const prefix = unique('sigterm-role');
    const answered: string[] = [];
    let failed = 0;
    let settled = 0;
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const name = `${prefix}-${i}`;
        try {
          const response = await postGraphQL<{ createRole: { id: string } }>(instance.url, ADMIN_KEY, 'mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', {
            i: { name, permissions: [] },
          });
          if (response.data?.createRole) answered.push(name);
          else failed++;
        } catch {
          failed++; // no response: refused or cut before the server read the request
        } finally {
          if (++settled === 20) instance.process.child.kill('SIGTERM');
        }
      }),
    );
    const exit = await exitWithin(exited, 30_000);
    const stored = (await db.query<{ name: string }>(`SELECT name FROM roles WHERE name LIKE $1`, [`${prefix}-%`])).map((r) => r.name);
    const audited = await db.query<{ name: string }>(
      `SELECT details->'after'->>'name' AS name FROM audit_events WHERE action = 'role.create' AND details->'after'->>'name' LIKE $1`,
      [`${prefix}-%`],
    );
    t.diagnostic(`${answered.length} answered, ${failed} not; ${stored.length} stored; exit ${JSON.stringify(exit)}`);
    assert.ok(answered.length >= 20, 'the requests settled before the signal were answered');
    assert.deepEqual([...stored].sort(), [...answered].sort(), 'every role that was created was answered as created, and only those');
    assert.deepEqual(audited.map((r) => r.name).sort(), [...answered].sort(), 'each with its role.create event, sealed before exit');
    assert.deepEqual(exit, { code: 0, signal: null });
  });
});

test('a REDIS_URL nothing answers on: the process refuses to start, one line naming REDIS_URL, exit 78, before any migration', { timeout: 60_000 }, async () => {
  const empty = await createTestDatabase();
  try {
    const result = await runToExit({ ...env, DATABASE_URL: empty.url, REDIS_URL: 'redis://127.0.0.1:1' });
    assert.equal(result.code, 78, `exit code 78 (EX_CONFIG); stderr: ${result.stderr}`);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line, got: ${result.stderr}`);
    assert.match(lines[0]!, /REDIS_URL/);
    assert.ok(!result.stdout.includes('keyledger listening'), 'it never served');
    const [tables] = await empty.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`);
    assert.equal(tables!.n, 0, 'the database was left untouched');
  } finally {
    await empty.drop();
  }
});
