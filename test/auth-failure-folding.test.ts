import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../src/auth/key-format';
import { AuditOutcome } from '../src/entities/enums';
import { AuthFailureFolding } from '../src/services/auth-failure-folding';
import { pollUntil } from './helpers/key-principals';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * Rejected keys are audited, but not one event per request without bound: anyone who can reach
 * the port could otherwise grow the append-only log at will.
 */

let t: TestServer;
before(async () => {
  t = await startTestServer({ trustProxy: true });
});
after(() => t?.close());

interface FailureRow {
  ip: string | null;
  details: { code: string; repeats?: number; windowSeconds?: number };
}

async function failuresFrom(ip: string): Promise<FailureRow[]> {
  return t.db.query<FailureRow>(`SELECT ip, details FROM audit_events WHERE action = 'auth.failure' AND ip = $1 ORDER BY id`, [ip]);
}

test('a flood of rejected keys from one address is recorded as its first hundred events and one count, every rejection accounted for', async () => {
  const ip = '198.51.100.7';
  const garbage = generateKey('kl'); // well-formed, unknown: NOT_FOUND
  for (let i = 0; i < 115; i++) {
    const refused = await postGraphQL(t.url, garbage, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': ip });
    assert.equal(refused.status, 401);
  }
  const before = await failuresFrom(ip);
  assert.equal(before.length, 100);
  assert.ok(before.every((row) => row.details.code === 'NOT_FOUND' && row.details.repeats === undefined));

  // Another address is counted on its own.
  const other = await postGraphQL(t.url, garbage, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': '198.51.100.8' });
  assert.equal(other.status, 401);
  assert.equal((await failuresFrom('198.51.100.8')).length, 1);

  await t.server.services.authFailures.flush(true);
  const afterFlush = await failuresFrom(ip);
  assert.equal(afterFlush.length, 101);
  assert.deepEqual(afterFlush[100]!.details, { ...afterFlush[100]!.details, code: 'NOT_FOUND', repeats: 15, windowSeconds: 60 });
  const accounted = afterFlush.reduce((sum, row) => sum + (row.details.repeats ?? 1), 0);
  assert.equal(accounted, 115);
});

test('an AUTH_FAILURES rule still counts every rejection, folded ones included', async () => {
  const key = generateKey('kl');
  const rule = await postGraphQL<{ createAlertRule: { id: string } }>(
    t.url,
    t.adminKey,
    'mutation($input: CreateAlertRuleInput!) { createAlertRule(input: $input) { id } }',
    { input: { name: 'many failures', metric: 'AUTH_FAILURES', threshold: 105, windowSeconds: 600, severity: 'HIGH' } },
  );
  assert.equal(rule.errors, undefined, JSON.stringify(rule.errors));
  for (let i = 0; i < 105; i++) await postGraphQL(t.url, key, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': '198.51.100.9' });
  assert.equal((await failuresFrom('198.51.100.9')).length, 100, 'five of the 105 are folded');
  await pollUntil(
    () => postGraphQL<{ alerts: { nodes: Array<{ type: string; message: string }> } }>(t.url, t.adminKey, '{ alerts(filter: { types: [THRESHOLD] }) { nodes { type message } } }'),
    (r) => (r.data?.alerts.nodes.length ?? 0) > 0,
    { timeoutMs: 5000, what: 'the THRESHOLD alert at 105 rejections' },
  );
});

test('windows end: a count is written once its window closes, and the next window records its first rejections again', async () => {
  const folding = new AuthFailureFolding(t.server.services.audit, (error) => assert.fail(String(error)), { windowMs: 1000, recordedPerWindow: 2, maxWindows: 2 });
  try {
    const actor = { type: 'ANONYMOUS', userId: null, keyId: null, ip: '203.0.113.5', userAgent: null, requestId: null } as never;
    const record = { action: 'auth.failure', outcome: AuditOutcome.DENIED, details: { code: 'MALFORMED' } };
    const start = 1_000_000;
    assert.deepEqual([0, 1, 2, 3, 4].map((i) => folding.admit(actor, record, start + i)), [true, true, false, false, false]);
    await folding.flush(false, start + 999);
    assert.equal((await failuresFrom('203.0.113.5')).length, 0, 'the window is still open');
    // The first rejection after the window: recorded again, and the closed window's count written.
    assert.equal(folding.admit(actor, record, start + 1000), true);
    await folding.flush(false, start + 1000);
    const rows = await failuresFrom('203.0.113.5');
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.details.repeats, 3);
    // More sources than windows held: recorded one by one rather than forgotten.
    const elsewhere = (ip: string) => ({ ...(actor as object), ip }) as never;
    assert.equal(folding.admit(elsewhere('203.0.113.6'), record, start + 1001), true);
    for (let i = 0; i < 5; i++) assert.equal(folding.admit(elsewhere('203.0.113.7'), record, start + 1001), true);
  } finally {
    await folding.close();
  }
});
