import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { holdLock } from './helpers/database';
import { roleIdByName, unique } from './helpers/fixtures';
import { createHuman, createKey, principalWithRoles, sleep, verify, type KeyPrincipal } from './helpers/key-principals';
import { startTestServer, type TestServer } from './helpers/server';

/**
 * A verification the database fails halfway (its statement cancelled, its connection cut while it
 * takes the quota) is an error for the caller and costs the key nothing: "failed verifications
 * consume neither quota nor rate limit".
 */

let t: TestServer;
let verifier: KeyPrincipal;
let ownerId: string;

before(async () => {
  t = await startTestServer();
  verifier = await principalWithRoles(t, ['verifier'], 'interrupted-verifier');
  ownerId = await createHuman(t, [await roleIdByName(t, 'member')], 'interrupted-owner');
});
after(() => t.close());

/** An Accept header the fast path does not know: the request goes through Apollo. */
const APOLLO_ACCEPT = 'application/json, */*;q=0.1';

type Interruption = 'pg_cancel_backend' | 'pg_terminate_backend';

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { data?: unknown; errors?: Array<{ extensions?: { code?: string } }> };
}

async function post(body: unknown, accept?: string): Promise<Answer> {
  const response = await fetch(t.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${verifier.key}`, ...(accept ? { accept } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: JSON.parse(await response.text()) };
}

/** Ends the server's statement waiting for the key's row lock, once it waits; fails the test if none ever does. */
async function interruptWaitingStatement(how: Interruption): Promise<void> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const rows = await t.db.query<{ ok: boolean }>(
      `SELECT ${how}(pid) AS ok FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'`,
    );
    if (rows.some((row) => row.ok)) return;
    await sleep(20);
  }
  assert.fail('no statement of the server ever waited on the key row');
}

/**
 * Sends a request while the key's row is locked, interrupts the server's statement waiting on the
 * lock, then releases the lock: whatever the server does after that runs unhindered.
 */
async function interrupted(keyIds: string[], how: Interruption, send: () => Promise<Answer>): Promise<Answer> {
  const lock = await holdLock(t.db.url, 'SELECT id FROM api_keys WHERE id = ANY($1::uuid[]) FOR UPDATE', [keyIds]);
  const answer = send();
  try {
    await interruptWaitingStatement(how);
  } finally {
    await lock.release();
  }
  return answer;
}

const VERIFY_ONE = 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code remaining rateLimit { remaining } } }';

for (const how of ['pg_cancel_backend', 'pg_terminate_backend'] as const) {
  test(`a verification whose quota statement is ended (${how}) gives its rate-limit point back`, async () => {
    const { secret, key } = await createKey(t, { ownerId, name: unique('interrupted'), remaining: 10, rateLimit: { limit: 2, windowSeconds: 3600 } });
    const first = await verify(t, verifier.key, { key: secret });
    assert.deepEqual([first.code, first.remaining, first.rateLimit?.remaining], ['VALID', 9, 1]);

    const failedAnswer = await interrupted([key.id], how, () => post({ query: VERIFY_ONE, variables: { input: { key: secret } } }, APOLLO_ACCEPT));
    assert.equal(failedAnswer.body.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR', JSON.stringify(failedAnswer.body));

    // The window allows 2: the earlier success took one, the failure none, so this one is VALID.
    const next = await verify(t, verifier.key, { key: secret });
    assert.deepEqual([next.code, next.remaining, next.rateLimit?.remaining], ['VALID', 8, 0]);
  });
}

/** A failed fast-path verification is the database's outage answer, as http.ts gives it for every request. */
function assertUnavailable(answer: Answer): void {
  assert.equal(answer.status, 503, JSON.stringify(answer.body));
  assert.equal(answer.retryAfter, '5');
  assert.equal(answer.body.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR');
  assert.equal(answer.body.data, undefined, 'no verification result');
}

test('fast path: an interrupted verifyKey is 503 with Retry-After, and is not verified again behind it', async () => {
  const { secret, key } = await createKey(t, { ownerId, name: unique('fast-one'), remaining: 10, rateLimit: { limit: 5, windowSeconds: 3600 } });
  const first = await verify(t, verifier.key, { key: secret });
  assert.deepEqual([first.code, first.remaining, first.rateLimit?.remaining], ['VALID', 9, 4]);

  // No Accept header of its own (fetch sends */*): the fast path answers.
  assertUnavailable(await interrupted([key.id], 'pg_cancel_backend', () => post({ query: VERIFY_ONE, variables: { input: { key: secret } } })));

  const next = await verify(t, verifier.key, { key: secret });
  assert.deepEqual([next.code, next.remaining, next.rateLimit?.remaining], ['VALID', 8, 3], 'only the earlier success took quota and rate limit');
});

test('fast path: a verifyKeys batch with one interrupted key is 503, and the keys already verified are not verified again', async () => {
  const done = await createKey(t, { ownerId, name: unique('fast-batch-done'), remaining: 10 });
  const held = await createKey(t, { ownerId, name: unique('fast-batch-held'), remaining: 10, rateLimit: { limit: 5, windowSeconds: 3600 } });
  const query = 'query($inputs: [VerifyKeyInput!]!) { verifyKeys(inputs: $inputs) { code remaining } }';

  const answer = await interrupted([held.key.id], 'pg_cancel_backend', () =>
    post({ query, variables: { inputs: [{ key: done.secret }, { key: held.secret }] } }),
  );
  assertUnavailable(answer);

  // The first key was verified once, in the failed batch; the interrupted one not at all.
  const doneNext = await verify(t, verifier.key, { key: done.secret });
  assert.deepEqual([doneNext.code, doneNext.remaining], ['VALID', 8]);
  const heldNext = await verify(t, verifier.key, { key: held.secret });
  assert.deepEqual([heldNext.code, heldNext.remaining, heldNext.rateLimit?.remaining], ['VALID', 9, 4]);
});
