import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { startServer, type RunningServer } from '../src/server/app';
import { KtDisableKeyDocument, KtEnableKeyDocument, KtKeyDocument, KtRotateKeyDocument, KtUpdateKeyDocument, type UpdateApiKeyInput } from './generated/graphql';
import { redisForTests } from './helpers/cluster';
import { roleIdByName, unique } from './helpers/fixtures';
import { createHuman, createKey, principalWithRoles, type KeyPrincipal } from './helpers/key-principals';
import { postGraphQL, startTestServer, testConfig, type TestServer } from './helpers/server';

/**
 * A key's rate-limit window as its users see it: only a change of its rate-limit setting starts a
 * fresh one (a setting the key had before included), on every instance, kept in-process or in
 * Redis; a rotation keeps the line's window, and the line counts under its newest key's setting.
 */

const redis = redisForTests();
/** Long enough that no window ends during a test */
const WINDOW = 600;

interface Verified {
  code: string;
  rateLimitRemaining: number | null;
}

for (const store of ['in-process', 'Redis'] as const) {
  describe(`rate-limit windows kept ${store}`, { skip: store === 'Redis' ? redis.skip : false }, () => {
    const pepper = randomBytes(32).toString('base64url');
    const redisUrl = store === 'Redis' ? redis.url : null;
    let t: TestServer;
    /** A second instance on the same database, without a key cache: it reads each key as it is now. */
    let other: RunningServer;
    let verifier: KeyPrincipal;
    let ownerId: string;

    before(async () => {
      t = await startTestServer({ keyPepper: pepper, redisUrl });
      const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });
      other = await startServer(testConfig(t.db.url, { keyPepper: pepper, bootstrapAdminKey: null, keyCacheSize: 0, redisUrl }), {
        logDestination: quiet,
        announce: () => {},
      });
      verifier = await principalWithRoles(t, ['verifier'], 'window-verifier');
      ownerId = await createHuman(t, [await roleIdByName(t, 'member')], 'window-owner');
    });
    after(async () => {
      await other?.close();
      await t?.close();
    });

    const instances = () => [t.url, other.url];

    async function verifyOn(url: string, secret: string): Promise<Verified> {
      const response = await postGraphQL<{ verifyKey: { code: string; rateLimit: { remaining: number } | null } }>(
        url,
        verifier.key,
        'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code rateLimit { remaining } } }',
        { input: { key: secret } },
      );
      assert.equal(response.errors, undefined, JSON.stringify(response.errors));
      return { code: response.data!.verifyKey.code, rateLimitRemaining: response.data!.verifyKey.rateLimit?.remaining ?? null };
    }

    /** Verifies on every instance until each answers RATE_LIMITED (each has its own window in-process). */
    async function exhaust(secret: string, limit: number): Promise<void> {
      for (const url of instances()) {
        for (let i = 0; i <= limit && (await verifyOn(url, secret)).code === 'VALID'; i++);
        assert.equal((await verifyOn(url, secret)).code, 'RATE_LIMITED', `spent on ${url}`);
      }
    }

    async function expectOnEvery(secret: string, code: string, why: string): Promise<void> {
      for (const url of instances()) assert.equal((await verifyOn(url, secret)).code, code, `${why} (${url})`);
    }

    const update = (id: string, input: UpdateApiKeyInput) => t.ok(t.adminKey, KtUpdateKeyDocument, { id, input });

    test('only a change of the rate-limit setting starts a fresh window, going back to an earlier one or re-adding it included', async () => {
      const limit = { limit: 2, windowSeconds: WINDOW };
      const { secret, key } = await createKey(t, { ownerId, name: unique('windowed'), rateLimit: limit });
      await exhaust(secret, 2);

      await update(key.id, { name: unique('renamed'), metadata: { team: 'payments' }, permissions: ['invoices:read'] });
      await update(key.id, { rateLimit: limit });
      await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id });
      await t.ok(t.adminKey, KtEnableKeyDocument, { id: key.id });
      await expectOnEvery(secret, 'RATE_LIMITED', 'other changes, and setting the same limit again, leave the window as it was');

      await update(key.id, { rateLimit: { limit: 3, windowSeconds: WINDOW } });
      await update(key.id, { rateLimit: limit });
      const back = await verifyOn(t.url, secret);
      assert.deepEqual(back, { code: 'VALID', rateLimitRemaining: 1 }, 'back to 2 per window: a fresh window, not the one spent before');
      assert.equal((await verifyOn(other.url, secret)).code, 'VALID', 'fresh on the other instance too');
      await exhaust(secret, 2);

      await update(key.id, { rateLimit: null });
      await update(key.id, { rateLimit: limit });
      await expectOnEvery(secret, 'VALID', 'removed and added again: a fresh window');
    });

    test("a rotation keeps the line's window and setting: the newest key's change moves the whole line, the old key's is refused", async () => {
      const limit = { limit: 2, windowSeconds: WINDOW };
      const { secret, key } = await createKey(t, { ownerId, name: unique('rotated'), rateLimit: limit });
      await exhaust(secret, 2);
      const successor = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: key.id, gracePeriodSeconds: 600 })).rotateApiKey;
      await expectOnEvery(successor.secret, 'RATE_LIMITED', 'the successor counts in the window its predecessor spent');

      await update(successor.apiKey.id, { rateLimit: { limit: 3, windowSeconds: WINDOW } });
      // One fresh window of 3 for both keys: alternating between them cannot get 3 from each.
      const line: Verified[] = [];
      for (const each of [secret, successor.secret, secret, successor.secret]) line.push(await verifyOn(t.url, each));
      assert.deepEqual(line, [
        { code: 'VALID', rateLimitRemaining: 2 },
        { code: 'VALID', rateLimitRemaining: 1 },
        { code: 'VALID', rateLimitRemaining: 0 },
        { code: 'RATE_LIMITED', rateLimitRemaining: 0 },
      ]);
      const oldKey = (await t.ok(t.adminKey, KtKeyDocument, { id: key.id })).apiKey!;
      assert.deepEqual(oldKey.rateLimit, { limit: 3, windowSeconds: WINDOW }, "the old key shows the line's setting");

      // Changing the old key's setting apart would give the line a second window.
      const refused = await t.request(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { rateLimit: { limit: 5, windowSeconds: WINDOW } } });
      assert.equal(refused.errors?.[0]?.extensions?.code, 'CONFLICT', JSON.stringify(refused.errors));
      assert.match(String(refused.errors?.[0]?.message), /successor/);
      assert.deepEqual(await verifyOn(t.url, secret), { code: 'RATE_LIMITED', rateLimitRemaining: 0 }, 'the old key still counts in the spent window');
      assert.deepEqual((await t.ok(t.adminKey, KtKeyDocument, { id: key.id })).apiKey!.rateLimit, { limit: 3, windowSeconds: WINDOW });
    });
  });
}
