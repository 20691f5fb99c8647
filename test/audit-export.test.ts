import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CreateApiKeyDocument, CreateUserDocument, RolesDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

let t: TestServer;
let memberKey: string;

before(async () => {
  t = await startTestServer();
  const roles = await t.ok(t.adminKey, RolesDocument);
  const member = roles.roles.find((r) => r.name === 'member')!;
  const user = await t.ok(t.adminKey, CreateUserDocument, { input: { name: 'm', email: 'm@example.com', roleIds: [member.id] } });
  memberKey = (await t.ok(t.adminKey, CreateApiKeyDocument, { input: { ownerId: user.createUser.id, name: 'm' } })).createApiKey.secret;
  // More rows than one read batch, written straight to the table (export does not re-check hashes).
  await t.db.query(`
    INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, prev_hash, hash, details)
    SELECT nextval('audit_events_id_seq'), now(), 'synthetic.event', 'SUCCESS', 'SYSTEM', 'x', 'y', jsonb_build_object('n', n)
      FROM generate_series(1, 2500) n`);
});
after(() => t.close());

function exportUrl(query: string): string {
  return `${t.baseUrl}/audit/export${query}`;
}

async function exportLines(key: string, query: string) {
  const response = await fetch(exportUrl(query), { headers: { authorization: `Bearer ${key}` } });
  const text = await response.text();
  return { response, lines: text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>) };
}

test('ndjson: every event once, in id order, with the contract field names; the export is audited', async () => {
  const [{ count }] = await t.db.query<{ count: number }>('SELECT count(*)::int AS count FROM audit_events');
  const { response, lines } = await exportLines(t.adminKey, '?format=ndjson');
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /ndjson/);
  assert.equal(response.headers.get('cache-control'), 'no-store', 'no cache keeps the trail');
  // The audit.export event is written before streaming starts, so it is part of the export.
  assert.equal(lines.length, count + 1);
  const ids = lines.map((l) => Number(l.id));
  assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!), 'strictly increasing ids');
  for (const field of ['occurredAt', 'action', 'outcome', 'actorType', 'actorId', 'actorKeyId', 'hash', 'details']) {
    assert.ok(field in lines[0]!, field);
  }
  assert.equal(lines.at(-1)!.action, 'audit.export');
  assert.equal(lines.at(-1)!.actorKeyId !== null, true);
});

test('splunk: HEC-shaped events with the event id in fields', async () => {
  const { response, lines } = await exportLines(t.adminKey, '?format=splunk');
  assert.equal(response.status, 200);
  const first = lines[0] as { time: number; event: { id: string }; fields: { event_id: string }; sourcetype: string };
  assert.equal(typeof first.time, 'number');
  assert.equal(first.fields.event_id, first.event.id);
  assert.equal(first.sourcetype, 'keyledger:audit');
});

test('from/to select a time range', async () => {
  const future = await exportLines(t.adminKey, '?from=2999-01-01T00:00:00Z');
  assert.equal(future.response.status, 200);
  assert.deepEqual(future.lines, []);
});

test('refused without audit:export (403, audited), without a key (401), and on bad parameters (400)', async () => {
  const denied = await fetch(exportUrl(''), { headers: { authorization: `Bearer ${memberKey}` } });
  assert.equal(denied.status, 403);
  assert.equal(((await denied.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'FORBIDDEN');
  const [event] = await t.db.query<{ outcome: string }>(`SELECT outcome FROM audit_events WHERE action = 'authz.denied' AND details->>'operation' = 'GET /audit/export'`);
  assert.equal(event?.outcome, 'DENIED');

  assert.equal((await fetch(exportUrl(''))).status, 401);
  for (const query of ['?format=csv', '?from=2020-02-30T00:00:00Z', '?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z']) {
    const bad = await fetch(exportUrl(query), { headers: { authorization: `Bearer ${t.adminKey}` } });
    assert.equal(bad.status, 400, query);
    assert.equal(((await bad.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'BAD_USER_INPUT');
  }
});
