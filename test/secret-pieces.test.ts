import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey, redactKeys } from '../src/auth/key-format';
import { BlankReasons1733400000000 } from '../migrations/1733400000000-blank-reasons';
import { BlankNames1733900000000 } from '../migrations/1733900000000-blank-names';
import { unique } from './helpers/fixtures';
import { createHuman, createKey, pollUntil, principalWithRoles, type KeyPrincipal } from './helpers/key-principals';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * A secret must not leave the server in part either: a key cut short, glued to other text, or
 * placed where one blanked match swallows its prefix is still most of a key, and its checksum is
 * a CRC32 anyone can recompute. These are the ways a review found a key's body getting through.
 */

let t: TestServer;
let live: KeyPrincipal;
let verifier: KeyPrincipal;

before(async () => {
  t = await startTestServer();
  live = await principalWithRoles(t, ['admin'], 'pieces-live');
  verifier = await principalWithRoles(t, ['verifier'], 'pieces-verifier');
});
after(() => t?.close());

/** The random part of a secret in 16-character windows: any of them in `text` is a piece of the key. */
function pieceOf(secret: string, text: string): string | null {
  const body = secret.slice(secret.indexOf('_') + 1);
  for (let i = 0; i + 16 <= body.length; i++) if (text.includes(body.slice(i, i + 16))) return body.slice(i, i + 16);
  return null;
}

function assertNoPiece(secret: string, text: string, where: string): void {
  const piece = pieceOf(secret, text);
  assert.equal(piece, null, `${where} holds a piece of the key (${piece}): ${text.slice(0, 600)}`);
}

/** Filler a naive key pattern matches, so its match ends inside the key that follows. */
const OVERLAPPING_FILLER = 'zz_' + 'A'.repeat(47);

test('redactKeys blanks a key cut short, glued to text or overlapped, and leaves ordinary words alone', () => {
  const key = generateKey('kl');
  const body = key.slice(3);
  for (const text of [key, `?api_key=${key}&x=1`, `token${key}`, key.slice(0, 30), `${OVERLAPPING_FILLER}${key}`, `[redacted]_${body}`, body.slice(0, 30) + '_' + body]) {
    assertNoPiece(key, redactKeys(text), JSON.stringify(text.slice(0, 20)));
  }
  const ordinary = 'audit_events_2026_10_details_idx keyledger_audit_sealed snake_case key.revoke kl_3Fz9 f9472ea4-1287-f445-e047-b53ed7f36b22 pi_3MtwBwLkdIwHu7ix28a3tqPa';
  assert.equal(redactKeys(ordinary), ordinary);
});

test("a verifyKey resource carrying a key (a URL's ?api_key=) is blanked in usage and in the alert that samples it", async () => {
  const ownerId = await createHuman(t, [], 'pieces-owner');
  const presented = await createKey(t, { ownerId, name: unique('pieces-revoked') });
  await postGraphQL(t.url, t.adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "test") { id } }', { id: presented.key.id });
  const resource = `GET /checkout?api_key=${live.key}`;
  const answer = await postGraphQL<{ verifyKey: { code: string } }>(
    t.url,
    verifier.key,
    'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } }',
    { input: { key: presented.secret, resource } },
  );
  assert.equal(answer.data?.verifyKey.code, 'REVOKED');
  await t.server.services.usage.flush();
  const usage = await t.db.query<{ resource: string }>('SELECT resource FROM usage_events WHERE key_id = $1', [presented.key.id]);
  assert.equal(usage.length, 1);
  assert.ok(usage[0]!.resource.startsWith('GET /checkout?'), usage[0]!.resource);
  assertNoPiece(live.key, usage[0]!.resource, 'usage_events.resource');

  const { value } = await pollUntil(
    () => postGraphQL<{ alerts: { nodes: Array<{ type: string; details: unknown }> } }>(
      t.url,
      t.adminKey,
      'query($f: AlertFilter) { alerts(filter: $f) { nodes { type details } } }',
      { f: { types: ['REVOKED_KEY_USED'], keyId: presented.key.id } },
    ),
    (r) => (r.data?.alerts.nodes.length ?? 0) > 0,
    { timeoutMs: 5000, what: 'the REVOKED_KEY_USED alert' },
  );
  const details = JSON.stringify(value.data!.alerts.nodes[0]!.details);
  assert.ok(details.includes('GET /checkout?'), `the alert samples the resource: ${details}`);
  assertNoPiece(live.key, details, 'the alert details');
});

test('a root field refused by a service rule is recorded by its field name, whatever alias or fragment (inline or named) it came through', async () => {
  const member = await principalWithRoles(t, ['member'], 'pieces-member');
  const alias = generateKey('kl');
  const denied = await postGraphQL(
    t.url,
    member.key,
    // A service rule refuses this (no escalation), not the field's own permission check.
    `mutation { ... on Mutation { ${alias}: createApiKey(input: { name: "${unique('k')}", permissions: ["users:write"] }) { secret } } }`,
  );
  assert.equal(denied.errors?.[0]?.extensions?.code, 'FORBIDDEN');
  // Behind a named fragment, with the alias another operation's name.
  const disguised = await postGraphQL(
    t.url,
    member.key,
    `mutation { ...F } fragment F on Mutation { verifyKey: createApiKey(input: { name: "${unique('k')}", permissions: ["users:write"] }) { secret } }`,
  );
  assert.equal(disguised.errors?.[0]?.extensions?.code, 'FORBIDDEN');
  const events = await t.db.query<{ details: { operation: string } }>(
    `SELECT details FROM audit_events WHERE action = 'authz.denied' AND actor_id = $1
     UNION ALL SELECT details FROM audit_staging WHERE action = 'authz.denied' AND actor_id = $1`,
    [member.userId],
  );
  assert.deepEqual(events.map((e) => e.details.operation), ['Mutation.createApiKey', 'Mutation.createApiKey']);
});

test('a key pasted as an audit event id, a revocation reason or a User-Agent leaves no piece in the audit log', async () => {
  const pasted = generateKey('kl');
  const asked = await postGraphQL(t.url, t.adminKey, `{ auditEvent(id: "${pasted}") { id } }`);
  assert.equal(asked.errors, undefined);

  const ownerId = await createHuman(t, [], 'pieces-reason');
  const { key } = await createKey(t, { ownerId, name: unique('pieces-reason') });
  const reason = `ticket 42: ${OVERLAPPING_FILLER}${pasted}`;
  const revoked = await postGraphQL(t.url, t.adminKey, 'mutation($id: ID!, $reason: String!) { revokeApiKey(id: $id, reason: $reason) { id } }', { id: key.id, reason });
  assert.equal(revoked.errors, undefined);

  // Cut at 1024 characters, the key's tail falls off: what is left must still be blanked.
  const userAgent = `${OVERLAPPING_FILLER.repeat(18)}${'x'.repeat(40)}${pasted}`;
  const created = await postGraphQL(t.url, t.adminKey, 'mutation($input: CreateRoleInput!) { createRole(input: $input) { id } }', { input: { name: unique('ua'), permissions: [] } }, { 'user-agent': userAgent });
  assert.equal(created.errors, undefined);

  await t.server.services.audit.settled();
  const rows = await t.db.query<{ row: string }>(`SELECT row_to_json(e)::text AS row FROM audit_events e WHERE e.occurred_at > now() - interval '1 minute'`);
  const dump = rows.map((r) => r.row).join('\n');
  assert.ok(dump.includes('ticket 42'), 'the reason is recorded');
  assert.ok(dump.includes('"auditEvent"'), 'the query is recorded');
  assertNoPiece(pasted, dump, 'the audit log');
});

test('errors that quote input (permissions, action filters, export parameters, routes, aliases) quote no piece of a key', async () => {
  const pasted = generateKey('abcdefghijkl');
  const answers: string[] = [];
  const role = await postGraphQL(t.url, t.adminKey, 'mutation($input: CreateRoleInput!) { createRole(input: $input) { id } }', { input: { name: unique('p'), permissions: [pasted] } });
  assert.equal(role.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
  answers.push(JSON.stringify(role.errors));
  const actions = await postGraphQL(t.url, t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { actions: [pasted] } });
  assert.equal(actions.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
  answers.push(JSON.stringify(actions.errors));
  const aliases = Array.from({ length: 33 }, () => `${pasted}: __typename`).join(' ');
  const guarded = await postGraphQL(t.url, t.adminKey, `{ ${aliases} }`);
  assert.ok(guarded.errors?.length, 'the document guard refuses it');
  answers.push(JSON.stringify(guarded.errors));
  for (const path of [`/audit/export?${pasted}=1`, `/${pasted}`]) {
    const response = await fetch(`${t.baseUrl}${path}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    assert.ok(response.status === 400 || response.status === 404, `${path}: ${response.status}`);
    answers.push(await response.text());
  }
  for (const answer of answers) assertNoPiece(pasted, answer, 'an error answer');
});

test("a reason naming a leaked key (revokeApiKey, revokeAllApiKeys, disableUser) is kept with the key blanked", async () => {
  const ownerId = await createHuman(t, [], 'pieces-reasons');
  const { key, secret } = await createKey(t, { ownerId, name: unique('pieces-leaked') });
  const revoked = await postGraphQL<{ revokeApiKey: { revokeReason: string } }>(
    t.url,
    t.adminKey,
    'mutation($id: ID!, $reason: String!) { revokeApiKey(id: $id, reason: $reason) { revokeReason } }',
    { id: key.id, reason: `leaked in ticket 7: ${secret}` },
  );
  assert.equal(revoked.data?.revokeApiKey.revokeReason, 'leaked in ticket 7: [redacted]');
  const other = await createKey(t, { ownerId, name: unique('pieces-leaked-2') });
  const all = await postGraphQL(t.url, t.adminKey, 'mutation($u: ID!, $reason: String!) { revokeAllApiKeys(userId: $u, reason: $reason) }', { u: ownerId, reason: `also ${other.secret}` });
  assert.equal(all.errors, undefined, JSON.stringify(all.errors));
  const read = await postGraphQL<{ apiKey: { revokeReason: string } }>(t.url, t.adminKey, 'query($id: ID!) { apiKey(id: $id) { revokeReason } }', { id: other.key.id });
  assert.equal(read.data?.apiKey.revokeReason, 'also [redacted]');
  const disabled = await postGraphQL(t.url, t.adminKey, 'mutation($u: ID!, $reason: String!) { disableUser(id: $u, reason: $reason) { id } }', { u: ownerId, reason: `owner of ${secret}` });
  assert.equal(disabled.errors, undefined, JSON.stringify(disabled.errors));
  const dump = (await t.db.query<{ row: string }>(`SELECT row_to_json(x)::text AS row FROM (SELECT * FROM api_keys WHERE owner_id = $1) x UNION ALL SELECT row_to_json(u)::text FROM users u WHERE id = $1`, [ownerId])).map((r) => r.row).join('\n');
  assertNoPiece(secret, dump, 'the stored reasons');
  assertNoPiece(other.secret, dump, 'the stored reasons');
});

test('reasons stored before blanking was applied to them are blanked by the migration', async () => {
  const ownerId = await createHuman(t, [], 'pieces-old-reason');
  const { key, secret } = await createKey(t, { ownerId, name: unique('pieces-old') });
  // As an older version stored it.
  await t.db.query(`UPDATE api_keys SET stored_status = 'REVOKED', revoke_reason = $1 WHERE id = $2`, [`leaked: ${secret}`, key.id]);
  await t.db.query(`UPDATE users SET disabled_reason = $1 WHERE id = $2`, [`owner of ${secret}`, ownerId]);
  const runner = t.server.dataSource.createQueryRunner();
  try {
    await new BlankReasons1733400000000().up(runner);
  } finally {
    await runner.release();
  }
  const [row] = await t.db.query<{ revoke_reason: string; disabled_reason: string }>(
    'SELECT k.revoke_reason, u.disabled_reason FROM api_keys k JOIN users u ON u.id = k.owner_id WHERE k.id = $1',
    [key.id],
  );
  assert.deepEqual(row, { revoke_reason: 'leaked: [redacted]', disabled_reason: 'owner of [redacted]' });
});

test('names stored before blanking was applied to them are blanked by the migration', async () => {
  const ownerId = await createHuman(t, [], 'pieces-old-name');
  const { key, secret } = await createKey(t, { ownerId, name: unique('pieces-old-name') });
  // As an older version stored them.
  await t.db.query('UPDATE api_keys SET name = $1 WHERE id = $2', [`copy of ${secret}`, key.id]);
  await t.db.query('UPDATE users SET name = $1 WHERE id = $2', [`owner ${secret}`, ownerId]);
  const runner = t.server.dataSource.createQueryRunner();
  try {
    await new BlankNames1733900000000().up(runner);
  } finally {
    await runner.release();
  }
  const [row] = await t.db.query<{ key_name: string; user_name: string }>(
    'SELECT k.name AS key_name, u.name AS user_name FROM api_keys k JOIN users u ON u.id = k.owner_id WHERE k.id = $1',
    [key.id],
  );
  assert.deepEqual(row, { key_name: 'copy of [redacted]', user_name: 'owner [redacted]' });
});
