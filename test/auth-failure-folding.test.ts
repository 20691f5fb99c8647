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
    // More sources than windows held: new ones share one window per code, and are counted too.
    const elsewhere = (ip: string) => ({ ...(actor as object), ip }) as never;
    assert.equal(folding.admit(elsewhere('203.0.113.6'), record, start + 1001), true);
    assert.deepEqual([7, 8, 9, 10].map((n) => folding.admit(elsewhere(`203.0.113.${n}`), record, start + 1001)), [true, true, false, false]);
    await folding.flush(true);
    const shared = (await failuresFrom('203.0.113.10')).at(-1)!;
    assert.deepEqual([shared.details.repeats, (shared.details as { fromManySources?: boolean }).fromManySources], [2, true]);
  } finally {
    await folding.close();
  }
  // Once closed, nothing would write a count: each rejection is its own event.
  const closedActor = { type: 'ANONYMOUS', userId: null, keyId: null, ip: '203.0.113.20', userAgent: null, requestId: null } as never;
  for (let i = 0; i < 4; i++) assert.equal(folding.admit(closedActor, { action: 'auth.failure', details: { code: 'MALFORMED' } }), true);
});

test('addresses of one IPv6 /64 are one source', async () => {
  const folding = new AuthFailureFolding(t.server.services.audit, (error) => assert.fail(String(error)), { windowMs: 60_000, recordedPerWindow: 3, maxWindows: 100 });
  try {
    const record = { action: 'auth.failure', outcome: AuditOutcome.DENIED, details: { code: 'NOT_FOUND' } };
    const from = (ip: string) => ({ type: 'ANONYMOUS', userId: null, keyId: null, ip, userAgent: null, requestId: null }) as never;
    const admitted = ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:ffff::3', '2001:db8:1:2::4', '2001:db8:1:3::1'].map((ip) => folding.admit(from(ip), record));
    assert.deepEqual(admitted, [true, true, true, false, true]);
  } finally {
    await folding.close();
  }
});

test("a count whose write fails is written at the next flush, not lost", async () => {
  let failures = 1;
  const written: Array<Record<string, unknown> | null | undefined> = [];
  const audit = {
    recordAlone: async (_actor: unknown, record: { details?: Record<string, unknown> | null }) => {
      if (failures-- > 0) throw new Error('database unavailable');
      written.push(record.details);
    },
  };
  const errors: unknown[] = [];
  const folding = new AuthFailureFolding(audit as never, (error) => errors.push(error), { windowMs: 1000, recordedPerWindow: 1, maxWindows: 10 });
  const actor = { type: 'ANONYMOUS', userId: null, keyId: null, ip: '203.0.113.30', userAgent: null, requestId: null } as never;
  const record = { action: 'auth.failure', details: { code: 'MALFORMED' } };
  for (let i = 0; i < 4; i++) folding.admit(actor, record, 5_000);
  await folding.flush(true);
  assert.equal(errors.length, 1);
  assert.deepEqual(written, []);
  await folding.close();
  assert.equal(written.length, 1);
  assert.equal((written[0] as Record<string, unknown>).repeats, 3);
});
