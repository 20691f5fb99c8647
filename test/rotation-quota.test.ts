import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KtKeyDocument, KtRotateKeyDocument, KtUpdateKeyDocument } from './generated/graphql';
import { createHuman, createKey, principalWithRoles, verify, type KeyPrincipal } from './helpers/key-principals';
import { roleIdByName } from './helpers/fixtures';
import { startTestServer, type TestServer } from './helpers/server';

/**
 * A rotation hands the quota to the successor: nothing is spent twice (not even by verifications
 * already on their way when it commits), the old key in its grace draws on what the successor
 * holds, a refill that is due moves with it, and a rotation without grace ends every older secret.
 */

let t: TestServer;
let verifier: KeyPrincipal;
let ownerId: string;

before(async () => {
  t = await startTestServer();
  verifier = await principalWithRoles(t, ['verifier']);
  ownerId = await createHuman(t, [await roleIdByName(t, 'member')], 'quota-owner');
});
after(() => t.close());

const rotate = async (id: string, gracePeriodSeconds: number) =>
  (await t.ok(t.adminKey, KtRotateKeyDocument, { id, gracePeriodSeconds })).rotateApiKey;
const readKey = async (id: string) => (await t.ok(t.adminKey, KtKeyDocument, { id })).apiKey!;

/** Verifies `secret` until it is refused; returns how many were VALID. */
async function drain(secret: string): Promise<number> {
  let valid = 0;
  for (;;) {
    const result = await verify(t, verifier.key, { key: secret });
    if (!result.valid) return valid;
    valid++;
  }
}

test('verifications racing a rotation spend the quota once: every unit of the quota is VALID exactly once over both keys', async () => {
  const QUOTA = 100;
  for (let trial = 0; trial < 5; trial++) {
    const { secret, key } = await createKey(t, { ownerId, name: `race-${trial}`, remaining: QUOTA });
    // Cached, as a busy key is.
    assert.equal((await verify(t, verifier.key, { key: secret })).remaining, QUOTA - 1);
    // Verifications keep arriving while the rotation runs, some of them waiting for its row lock.
    let rotating = true;
    const rotation = rotate(key.id, 3600).finally(() => (rotating = false));
    const raced: Array<number | null> = [];
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (rotating) {
          const result = await verify(t, verifier.key, { key: secret });
          assert.equal(result.code, 'VALID');
          raced.push(result.remaining ?? null);
        }
      }),
    );
    const successorValid = await drain((await rotation).secret);
    assert.equal(1 + raced.length + successorValid, QUOTA, `trial ${trial}: ${raced.length} raced + ${successorValid} after`);
    assert.equal(new Set(raced).size, raced.length, `every remaining value once: ${raced.join(',')}`);
  }
});

test('the old key in its grace draws on what its successor holds, including quota given to the successor', async () => {
  const { secret, key } = await createKey(t, { ownerId, name: 'grace-draws', remaining: 1 });
  assert.equal((await verify(t, verifier.key, { key: secret })).valid, true);
  const successor = await rotate(key.id, 600);
  assert.equal(successor.apiKey.remaining, 0);
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'USAGE_EXCEEDED');
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: successor.apiKey.id, input: { remaining: 5 } });
  const old = await verify(t, verifier.key, { key: secret });
  assert.deepEqual([old.code, old.remaining], ['VALID', 4]);
  assert.equal((await readKey(key.id)).remaining, 4);
  assert.equal((await verify(t, verifier.key, { key: successor.secret })).remaining, 3);
});

test('a refill that is due when the key is rotated moves to the successor, on the same schedule', async () => {
  const { secret, key } = await createKey(t, { ownerId, name: 'refill-moves', remaining: 2, refill: { amount: 2, intervalSeconds: 2 } });
  const scheduleStart = new Date((await readKey(key.id)).refill!.lastRefillAt as string).getTime();
  assert.equal(await drain(secret), 2);
  await new Promise((resolve) => setTimeout(resolve, 2300));
  const successor = await rotate(key.id, 600);
  assert.equal(successor.apiKey.remaining, 2, 'the refill that was due');
  const refilledAt = new Date(successor.apiKey.refill!.lastRefillAt as string).getTime();
  assert.equal(refilledAt, scheduleStart + 2000, 'the schedule keeps its phase');
  // The old key shows the quota and refill it shares.
  const old = await readKey(key.id);
  assert.deepEqual([old.remaining, old.refill?.amount], [2, 2]);
  assert.equal(await drain(successor.secret), 2);
});

test('rotating with no grace ends every older key of the line still in its grace, and says so in the audit event', async () => {
  const first = await createKey(t, { ownerId, name: 'line' });
  const second = await rotate(first.key.id, 600);
  assert.equal((await verify(t, verifier.key, { key: first.secret })).code, 'VALID');
  const third = await rotate(second.apiKey.id, 0);
  assert.equal((await verify(t, verifier.key, { key: second.secret })).code, 'EXPIRED');
  assert.equal((await verify(t, verifier.key, { key: first.secret })).code, 'EXPIRED');
  assert.equal((await verify(t, verifier.key, { key: third.secret })).code, 'VALID');
  assert.equal((await readKey(first.key.id)).status, 'EXPIRED');
  const [event] = await t.db.query<{ details: { predecessorsExpired?: string[] } }>(
    `SELECT details FROM audit_staging WHERE action = 'key.rotate' AND target_id = $1
     UNION ALL SELECT details FROM audit_events WHERE action = 'key.rotate' AND target_id = $1`,
    [second.apiKey.id],
  );
  assert.deepEqual(event!.details.predecessorsExpired, [first.key.id]);
});

test('a rotation with grace leaves older keys their own, shorter grace', async () => {
  const first = await createKey(t, { ownerId, name: 'line-graces' });
  const second = await rotate(first.key.id, 60);
  const firstEnds = (await readKey(first.key.id)).expiresAt;
  await rotate(second.apiKey.id, 3600);
  assert.equal((await readKey(first.key.id)).expiresAt, firstEnds);
  assert.equal((await verify(t, verifier.key, { key: first.secret })).code, 'VALID');
});

test('a key past its grace answers EXPIRED with nothing left, not the quota its successor spends', async () => {
  const { secret, key } = await createKey(t, { ownerId, name: 'dead-secret', remaining: 10 });
  const successor = await rotate(key.id, 0);
  assert.equal((await verify(t, verifier.key, { key: successor.secret })).remaining, 9);
  const dead = await verify(t, verifier.key, { key: secret });
  assert.deepEqual([dead.code, dead.remaining], ['EXPIRED', 0]);
});

test('a key read when a refill is due shows the quota the next verification will find, and when that refill fell due', async () => {
  const { secret, key } = await createKey(t, { ownerId, name: 'refill-read', remaining: 1, refill: { amount: 3, intervalSeconds: 1 } });
  const scheduleStart = new Date((await readKey(key.id)).refill!.lastRefillAt as string).getTime();
  assert.equal((await verify(t, verifier.key, { key: secret })).remaining, 0);
  assert.equal((await readKey(key.id)).remaining, 0, 'spent, and no refill due yet');
  // Two and a bit intervals on: the refill is due, though no verification has applied it.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, scheduleStart + 2200 - Date.now())));
  const due = await readKey(key.id);
  assert.equal(due.remaining, 3);
  assert.equal(new Date(due.refill!.lastRefillAt as string).getTime(), scheduleStart + 2000, 'on the schedule, not when it was read');
  assert.equal((await verify(t, verifier.key, { key: secret })).remaining, 2, 'the verification found what the read showed');
});
