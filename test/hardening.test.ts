import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../src/auth/key-format';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';
import { eventsOfRequest } from './helpers/principals';

// Denied and bad-input paths found in review: each must answer with a contract code, never a 500.
let t: TestServer;
let memberKey: string;
let memberId: string;
let roleIds: Record<string, string>;

async function gql<T = Record<string, unknown>>(key: string, query: string, variables?: unknown) {
  return postGraphQL<T>(t.url, key, query, variables);
}

async function ok<T = Record<string, unknown>>(key: string, query: string, variables?: unknown): Promise<T> {
  const result = await gql<T>(key, query, variables);
  assert.equal(result.errors, undefined, JSON.stringify(result.errors));
  return result.data!;
}

async function userWithRoles(name: string, roles: string[]): Promise<{ id: string; key: string }> {
  const created = await ok<{ createUser: { id: string } }>(t.adminKey, 'mutation($i: CreateUserInput!) { createUser(input: $i) { id } }', {
    i: { name, email: `${name}@example.com`, roleIds: roles.map((r) => roleIds[r]) },
  });
  const key = await ok<{ createApiKey: { secret: string } }>(t.adminKey, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', {
    i: { ownerId: created.createUser.id, name: `${name} key`, permissions: ['*'] },
  });
  return { id: created.createUser.id, key: key.createApiKey.secret };
}

before(async () => {
  t = await startTestServer({ trustProxy: true });
  const roles = await ok<{ roles: Array<{ id: string; name: string }> }>(t.adminKey, '{ roles { id name } }');
  roleIds = Object.fromEntries(roles.roles.map((r) => [r.name, r.id]));
  const member = await userWithRoles('hard-member', ['member']);
  memberKey = member.key;
  memberId = member.id;
});
after(() => t.close());

test('NUL characters are bad input, not a failed write', async () => {
  const verifier = await userWithRoles('hard-verifier', ['verifier']);
  const verify = await gql(verifier.key, 'query($i: VerifyKeyInput!) { verifyKey(input: $i) { code } }', {
    i: { key: memberKey, resource: 'a\u0000b' },
  });
  assert.deepEqual(errorCodes(verify), ['BAD_USER_INPUT']);
  const role = await gql(t.adminKey, 'mutation { createRole(input: { name: "nul-role", description: "a\\u0000b", permissions: [] }) { id } }');
  assert.deepEqual(errorCodes(role), ['BAD_USER_INPUT']);
  const filter = await gql(t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: { a: '\u0000' } } });
  assert.deepEqual(errorCodes(filter), ['BAD_USER_INPUT']);
  // A literal backslash-u sequence is ordinary text and is kept as written.
  const text = 'a\\u0000b';
  await ok(t.adminKey, 'mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', { i: { name: 'backslash-role', description: text, permissions: [] } });
  const events = await ok<{ auditEvents: { nodes: Array<{ details: { after: { description: string } } }> } }>(
    t.adminKey,
    'query { auditEvents(filter: { actions: ["role.create"] }, first: 1) { nodes { details } } }',
  );
  assert.equal(events.auditEvents.nodes[0]!.details.after.description, text);
});

test('with TRUST_PROXY the address is the right-most X-Forwarded-For entry, not one the client typed', async () => {
  const limited = await ok<{ createApiKey: { secret: string } }>(t.adminKey, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', {
    i: { ownerId: memberId, name: 'cidr key', allowedCidrs: ['10.9.9.9/32'] },
  });
  const spoofed = await postGraphQL(t.url, limited.createApiKey.secret, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': '10.9.9.9, 192.0.2.7' });
  assert.equal(spoofed.status, 401);
  const proxied = await postGraphQL(t.url, limited.createApiKey.secret, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': '192.0.2.7, 10.9.9.9' });
  assert.equal(proxied.status, 200);
});

test('with TRUST_PROXY a forwarded link-local address keeps its address without the zone, as a socket address does', async () => {
  const fenced = await ok<{ createApiKey: { secret: string } }>(t.adminKey, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', {
    i: { ownerId: memberId, name: 'link-local key', allowedCidrs: ['fe80::/64'] },
  });
  const linkLocal = await postGraphQL(t.url, fenced.createApiKey.secret, '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': 'fe80::1%eth0' });
  assert.equal(linkLocal.status, 200, 'the allowlist saw fe80::1, not the proxy');
});

test('links to other users need users:read; one’s own user and key need nothing more', async () => {
  // The admin created the member and its key: without users:read that link reads as null.
  const hidden = await ok<{ viewer: { user: { createdBy: unknown }; key: { createdBy: unknown } } }>(
    memberKey,
    '{ viewer { user { createdBy { email } } key { createdBy { email } } } }',
  );
  assert.equal(hidden.viewer.user.createdBy, null);
  assert.equal(hidden.viewer.key.createdBy, null);
  // With users:read the same link resolves.
  const seen = await ok<{ user: { createdBy: { id: string } | null } }>(t.adminKey, 'query($id: ID!) { user(id: $id) { createdBy { id } } }', { id: memberId });
  assert.notEqual(seen.user.createdBy, null);
  const own = await ok<{ viewer: { key: { owner: { id: string } } } }>(memberKey, '{ viewer { key { owner { id } } user { serviceAccounts { id } } } }');
  assert.equal(own.viewer.key.owner.id, memberId);
});

test('roles of a user who holds more cannot be changed by one who holds less', async () => {
  const limitedRole = await ok<{ createRole: { id: string } }>(t.adminKey, 'mutation { createRole(input: { name: "user-admin-lite", permissions: ["users:write", "users:read", "keys:own"] }) { id } }');
  roleIds['user-admin-lite'] = limitedRole.createRole.id;
  const actor = await userWithRoles('hard-lite', ['user-admin-lite']);
  const target = await userWithRoles('hard-target', ['auditor', 'member']);
  const strip = await gql(actor.key, 'mutation($u: ID!, $r: ID!) { unassignRole(userId: $u, roleId: $r) { id } }', { u: target.id, r: roleIds.member });
  assert.deepEqual(errorCodes(strip), ['FORBIDDEN']);
});

test('a disabled key cannot be rotated into an active one', async () => {
  const key = await ok<{ createApiKey: { apiKey: { id: string } } }>(memberKey, 'mutation { createApiKey(input: { name: "to disable" }) { apiKey { id } } }');
  await ok(t.adminKey, 'mutation($id: ID!) { disableApiKey(id: $id) { id } }', { id: key.createApiKey.apiKey.id });
  const rotated = await gql(memberKey, 'mutation($id: ID!) { rotateApiKey(id: $id) { secret } }', { id: key.createApiKey.apiKey.id });
  assert.deepEqual(errorCodes(rotated), ['CONFLICT']);
});

test('malformed ids and out-of-range numbers are answered, not 500', async () => {
  const report = await ok<{ usageReport: unknown[] }>(t.adminKey, 'query { usageReport(from: "2026-01-01T00:00:00Z", to: "2027-01-01T00:00:00Z", ownerId: "not-a-uuid") { valid } }');
  assert.deepEqual(report.usageReport, []);
  const event = await ok<{ auditEvent: unknown }>(t.adminKey, '{ auditEvent(id: "9999999999999999999") { id } }');
  assert.equal(event.auditEvent, null);
  const cursor = Buffer.from('ae:9999999999999999999').toString('base64url');
  assert.deepEqual(errorCodes(await gql(t.adminKey, `{ auditEvents(after: "${cursor}") { nodes { id } } }`)), ['BAD_USER_INPUT']);
});

test("a cursor from another list, or edited by hand, is BAD_USER_INPUT; each list's own cursor pages on", async () => {
  type Paged = { pageInfo: { endCursor: string | null } };
  const users = await ok<{ users: Paged }>(t.adminKey, '{ users(first: 1) { pageInfo { endCursor } } }');
  const keys = await ok<{ apiKeys: Paged }>(t.adminKey, '{ apiKeys(first: 1) { pageInfo { endCursor } } }');
  const events = await ok<{ auditEvents: Paged }>(t.adminKey, '{ auditEvents(first: 1) { pageInfo { endCursor } } }');
  const userCursor = users.users.pageInfo.endCursor!;
  const keyCursor = keys.apiKeys.pageInfo.endCursor!;
  const eventCursor = events.auditEvents.pageInfo.endCursor!;
  const page = (list: string, after: string) => gql(t.adminKey, `query($a: String) { ${list}(first: 1, after: $a) { pageInfo { endCursor } } }`, { a: after });

  assert.deepEqual(errorCodes(await page('users', userCursor)), []);
  assert.deepEqual(errorCodes(await page('apiKeys', keyCursor)), []);
  assert.deepEqual(errorCodes(await page('auditEvents', eventCursor)), []);
  for (const [list, foreign] of [['apiKeys', userCursor], ['users', keyCursor], ['alerts', keyCursor], ['auditEvents', keyCursor], ['users', eventCursor]] as const) {
    assert.deepEqual(errorCodes(await page(list, foreign)), ['BAD_USER_INPUT'], `${list} with another list's cursor`);
  }
  // The same fields with one changed: a position chosen by hand.
  const [kind, , id, check] = JSON.parse(Buffer.from(userCursor, 'base64url').toString('utf8')) as string[];
  const forged = Buffer.from(JSON.stringify([kind, '2000-01-01T00:00:00.000Z', id, check])).toString('base64url');
  assert.deepEqual(errorCodes(await page('users', forged)), ['BAD_USER_INPUT']);
  const [, eventId] = /^ae:(\d+):/.exec(Buffer.from(eventCursor, 'base64url').toString('utf8'))!;
  const editedEvent = Buffer.from(Buffer.from(eventCursor, 'base64url').toString('utf8').replace(`ae:${eventId}:`, `ae:${Number(eventId) + 1}:`)).toString('base64url');
  assert.deepEqual(errorCodes(await page('auditEvents', editedEvent)), ['BAD_USER_INPUT']);
});

test('actions: ["*"] keeps every other filter', async () => {
  const all = await ok<{ auditEvents: { nodes: Array<{ outcome: string }> } }>(
    t.adminKey,
    '{ auditEvents(filter: { actions: ["*"], outcome: DENIED }, first: 500) { nodes { outcome } } }',
  );
  assert.ok(all.auditEvents.nodes.length > 0, 'the denials above were recorded');
  assert.ok(all.auditEvents.nodes.every((n) => n.outcome === 'DENIED'));
});

test('GraphQL answers, data and errors alike, tell caches not to store them', async () => {
  for (const [key, query] of [[t.adminKey, '{ roles { id } }'], [t.adminKey, '{ nope }'], [null, '{ roles { id } }']] as const) {
    const response = await fetch(t.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ query }),
    });
    assert.equal(response.headers.get('cache-control'), 'no-store', `${query} with${key ? '' : 'out'} a key: ${response.status}`);
  }
});

test('reading one audit event is audited like every other audit query, once per event read', async () => {
  const countReads = async () =>
    Number((await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE action = 'audit.query' AND details->>'query' = 'auditEvent'`))[0]!.n);
  const before = await countReads();
  const [{ id }] = await t.db.query<{ id: string }>(`SELECT id::text AS id FROM audit_events ORDER BY id LIMIT 1`);
  await ok(t.adminKey, 'query($id: ID!) { a: auditEvent(id: $id) { id } b: auditEvent(id: $id) { id } c: auditEvent(id: "999999999") { id } }', { id });
  assert.equal(await countReads(), before + 3);
  const [last] = await t.db.query<{ details: { id: string; found: boolean } }>(
    `SELECT details FROM audit_events WHERE action = 'audit.query' AND details->>'query' = 'auditEvent' AND details->>'id' = '999999999'`,
  );
  assert.equal(last!.details.found, false);
});

test('a key whose metadata has a key named hasOwnProperty can still be changed, revoked and rotated', async () => {
  const created = await ok<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    t.adminKey,
    'mutation { createApiKey(input: { name: "odd metadata", permissions: ["keys:own"], metadata: { hasOwnProperty: 1, constructor: 2 } }) { secret apiKey { id } } }',
  );
  const id = created.createApiKey.apiKey.id;
  const updated = await ok<{ updateApiKey: { metadata: Record<string, unknown> } }>(t.adminKey, 'mutation($id: ID!) { updateApiKey(id: $id, input: { name: "renamed", metadata: { hasOwnProperty: 3 } }) { metadata } }', { id });
  assert.deepEqual(updated.updateApiKey.metadata, { hasOwnProperty: 3 });
  await ok(t.adminKey, 'mutation($id: ID!) { disableApiKey(id: $id) { id } }', { id });
  await ok(t.adminKey, 'mutation($id: ID!) { enableApiKey(id: $id) { id } }', { id });
  const rotated = await ok<{ rotateApiKey: { apiKey: { id: string } } }>(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 60) { apiKey { id } } }', { id });
  await ok(t.adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "leaked") { status } }', { id });
  const check = await ok<{ verifyKey: { code: string } }>(t.adminKey, 'query($k: String!) { verifyKey(input: { key: $k }) { code } }', { k: created.createApiKey.secret });
  assert.equal(check.verifyKey.code, 'REVOKED');
  const successor = await ok<{ apiKey: { metadata: Record<string, unknown> } }>(t.adminKey, 'query($id: ID!) { apiKey(id: $id) { metadata } }', { id: rotated.rotateApiKey.apiKey.id });
  assert.deepEqual(successor.apiKey.metadata, { hasOwnProperty: 3 });
});

test('a cursor with a date PostgreSQL cannot hold (a six-digit or zero year) is bad input', async () => {
  for (const date of ['-010000-01-01T00:00:00.000Z', '+275760-01-01T00:00:00.000Z', '0000-01-01T00:00:00.000Z']) {
    const after = Buffer.from(JSON.stringify([date, '00000000-0000-4000-8000-000000000000'])).toString('base64url');
    for (const query of ['query($a: String) { users(after: $a) { totalCount } }', 'query($a: String) { apiKeys(after: $a) { totalCount } }']) {
      assert.deepEqual(errorCodes(await gql(t.adminKey, query, { a: after })), ['BAD_USER_INPUT'], `${query} ${date}`);
    }
  }
});

test('a rotated key ends with its grace: its expiry can come sooner, never later', async () => {
  const created = await ok<{ createApiKey: { secret: string; apiKey: { id: string } } }>(t.adminKey, 'mutation { createApiKey(input: { name: "rotated once" }) { secret apiKey { id } } }');
  const id = created.createApiKey.apiKey.id;
  await ok(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 3600) { apiKey { id } } }', { id });
  for (const expiresAt of ['2099-01-01T00:00:00Z', null]) {
    const revived = await gql(t.adminKey, 'mutation($id: ID!, $e: DateTimeISO) { updateApiKey(id: $id, input: { expiresAt: $e }) { id } }', { id, e: expiresAt });
    assert.deepEqual(errorCodes(revived), ['CONFLICT'], JSON.stringify(revived));
  }
  const sooner = new Date(Date.now() + 60_000).toISOString();
  await ok(t.adminKey, 'mutation($id: ID!, $e: DateTimeISO) { updateApiKey(id: $id, input: { expiresAt: $e }) { id } }', { id, e: sooner });
  const read = await ok<{ apiKey: { expiresAt: string } }>(t.adminKey, 'query($id: ID!) { apiKey(id: $id) { expiresAt } }', { id });
  assert.equal(new Date(read.apiKey.expiresAt).getTime(), new Date(sooner).getTime());
});

test("a rotated key shows the quota it shares with its successor, and its quota is changed on the successor, not silently on it", async () => {
  const created = await ok<{ createApiKey: { secret: string; apiKey: { id: string } } }>(t.adminKey, 'mutation { createApiKey(input: { name: "quota shared", remaining: 10 }) { secret apiKey { id } } }');
  const id = created.createApiKey.apiKey.id;
  const rotated = await ok<{ rotateApiKey: { secret: string; apiKey: { id: string } } }>(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 3600) { secret apiKey { id } } }', { id });
  const successorId = rotated.rotateApiKey.apiKey.id;
  for (let i = 0; i < 3; i++) {
    const verified = await ok<{ verifyKey: { code: string } }>(t.adminKey, 'query($k: String!) { verifyKey(input: { key: $k }) { code } }', { k: rotated.rotateApiKey.secret });
    assert.equal(verified.verifyKey.code, 'VALID');
  }
  const remaining = async (keyId: string) => (await ok<{ apiKey: { remaining: number | null } }>(t.adminKey, 'query($id: ID!) { apiKey(id: $id) { remaining } }', { id: keyId })).apiKey.remaining;
  assert.equal(await remaining(successorId), 7);
  assert.equal(await remaining(id), 7, 'the old key draws on the same quota');

  for (const input of [{ remaining: 1000 }, { refill: { amount: 5, intervalSeconds: 60 } }]) {
    const refused = await gql(t.adminKey, 'mutation($id: ID!, $input: UpdateApiKeyInput!) { updateApiKey(id: $id, input: $input) { remaining } }', { id, input });
    assert.deepEqual(errorCodes(refused), ['CONFLICT'], JSON.stringify(refused));
  }
  assert.equal(await remaining(id), 7, 'nothing was changed');
  const events = await ok<{ auditEvents: { nodes: unknown[] } }>(t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { actions: ['key.update'], targetId: id } });
  assert.deepEqual(events.auditEvents.nodes, [], 'no key.update event claims a change that did not happen');
  await ok(t.adminKey, 'mutation($id: ID!) { updateApiKey(id: $id, input: { remaining: 1000 }) { id } }', { id: successorId });
  assert.equal(await remaining(id), 1000);
});
test('an allowlist network is stored as the network it names, host bits cleared, and still admits its addresses', async () => {
  const created = await ok<{ createApiKey: { secret: string; apiKey: { allowedCidrs: string[] } } }>(
    t.adminKey,
    'mutation { createApiKey(input: { name: "host bits", allowedCidrs: ["10.9.8.7/8", "2001:db8:1:2:3:4:5:6/64", "::ffff:192.168.1.1/120"] }) { secret apiKey { allowedCidrs } } }',
  );
  assert.deepEqual(created.createApiKey.apiKey.allowedCidrs, ['10.0.0.0/8', '2001:db8:1:2::/64', '192.168.1.0/24']);
  for (const [ip, code] of [['10.200.0.1', 'VALID'], ['2001:db8:1:2:ffff::1', 'VALID'], ['192.168.1.77', 'VALID'], ['11.0.0.1', 'IP_NOT_ALLOWED']] as const) {
    const verified = await ok<{ verifyKey: { code: string } }>(t.adminKey, 'query($k: String!, $ip: String) { verifyKey(input: { key: $k, ip: $ip }) { code } }', { k: created.createApiKey.secret, ip });
    assert.equal(verified.verifyKey.code, code, ip);
  }
});

test('two ways of writing one allowlist network are stored once, in the order first given', async () => {
  const created = await ok<{ createApiKey: { apiKey: { allowedCidrs: string[] } } }>(
    t.adminKey,
    'mutation { createApiKey(input: { name: "same network twice", allowedCidrs: ["10.0.0.0/8", "192.0.2.0/24", "10.1.2.3/8", "::ffff:10.0.0.0/104"] }) { apiKey { allowedCidrs } } }',
  );
  assert.deepEqual(created.createApiKey.apiKey.allowedCidrs, ['10.0.0.0/8', '192.0.2.0/24']);
});

test('client addresses are stored in one form (mapped IPv4 as IPv4, IPv6 per RFC 5952), so filters and counts agree, wide IPv6 networks included', async () => {
  // Rejected keys from forwarded addresses: auth.failure events carrying each address.
  for (const address of ['0:0:0:0:0:ffff:10.77.0.77', '2001:0db8::00ff', '2001:DB8::FF']) {
    const refused = await postGraphQL(t.url, generateKey('kl'), '{ viewer { user { id } } }', undefined, { 'x-forwarded-for': address });
    assert.equal(refused.status, 401);
  }
  type Listed = { auditEvents: { nodes: Array<{ ip: string | null }> } };
  const listed = async (ip: string) =>
    (await ok<Listed>(t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f, first: 500) { nodes { ip } } }', { f: { actions: ['auth.failure'], ip } })).auditEvents.nodes.map((n) => n.ip);
  assert.deepEqual(await listed('10.77.0.0/16'), ['10.77.0.77']);
  assert.deepEqual(await listed('::ffff:10.77.0.77'), ['10.77.0.77']);
  assert.deepEqual(await listed('2001:db8::ff'), ['2001:db8::ff', '2001:db8::ff']);
  // Wider IPv6 networks hold the mapped IPv4 space, so they find the IPv4 event too.
  for (const wide of ['::/0', '::ffff:0:0/95', '::/80']) assert.ok((await listed(wide)).includes('10.77.0.77'), wide);
  assert.ok(!(await listed('2001:db8::/32')).includes('10.77.0.77'));
  const counts = await ok<{ auditCounts: Array<{ key: string; count: number }> }>(t.adminKey, 'query($f: AuditEventFilter) { auditCounts(filter: $f, groupBy: IP, limit: 100) { key count } }', {
    f: { actions: ['auth.failure'], ip: '2001:db8::/32' },
  });
  assert.deepEqual(counts.auditCounts, [{ key: '2001:db8::ff', count: 2 }]);
  assert.deepEqual(errorCodes(await gql(t.adminKey, 'query { auditEvents(filter: { ip: "" }) { nodes { id } } }')), ['BAD_USER_INPUT']);
});

test('the export refuses a parameter it does not know rather than exporting everything', async () => {
  const base = t.url.replace(/\/graphql$/, '');
  const response = await fetch(`${base}/audit/export?from=2020-01-01T00:00:00Z&actions=key.create`, { headers: { authorization: `Bearer ${t.adminKey}` } });
  assert.equal(response.status, 400);
  const body = (await response.json()) as { errors: Array<{ extensions: { code: string } }> };
  assert.equal(body.errors[0]!.extensions.code, 'BAD_USER_INPUT');
});

test('an id written in upper case is the same id: reads find it, oneself stays oneself, and an unchanged owner is no change', async () => {
  const upper = (id: string) => id.toUpperCase();
  const found = await ok<{ user: { id: string } | null }>(t.adminKey, `{ user(id: "${upper(memberId)}") { id } }`);
  assert.equal(found.user?.id, memberId);
  // Without users:read a member may read itself, however it writes its id.
  const self = await gql<{ user: { id: string } | null }>(memberKey, 'query($id: ID!) { user(id: $id) { id } }', { id: upper(memberId) });
  assert.deepEqual([errorCodes(self), self.data?.user?.id], [[], memberId]);

  const owner = await userWithRoles('upper-owner', ['member']);
  const account = await ok<{ createServiceAccount: { id: string } }>(t.adminKey, 'mutation($i: CreateServiceAccountInput!) { createServiceAccount(input: $i) { id } }', {
    i: { name: 'upper-account', ownerId: owner.id },
  });
  const accountId = account.createServiceAccount.id;
  const moved = await ok<{ updateUser: { owner: { id: string } | null } }>(t.adminKey, 'mutation($id: ID!, $o: ID!) { updateUser(id: $id, input: { ownerId: $o }) { owner { id } } }', {
    id: upper(accountId),
    o: upper(owner.id),
  });
  assert.equal(moved.updateUser.owner?.id, owner.id);
  const updates = await ok<{ auditEvents: { nodes: unknown[] } }>(t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', {
    f: { actions: ['user.update'], targetId: accountId },
  });
  assert.deepEqual(updates.auditEvents.nodes, [], 'no user.update event for an owner that did not change');
});

test('every refused root field of one request is audited, also those whose errors the nulled answer drops', async () => {
  const refused = await gql(memberKey, '{ roles { id } users { totalCount } auditEvents { nodes { id } } alertRules { id } }');
  assert.equal(refused.data ?? null, null);
  const events = await eventsOfRequest(t, refused, ['authz.denied']);
  const operations = events.map((e) => String((e.details as { operation?: string }).operation)).sort();
  assert.deepEqual(operations, ['Query.alertRules', 'Query.auditEvents', 'Query.roles', 'Query.users']);
  // Aliases of one refused non-null field: one event, every alias counted.
  const aliased = await gql(memberKey, '{ a: users { totalCount } b: users { totalCount } c: users { totalCount } }');
  const [event, ...more] = await eventsOfRequest(t, aliased, ['authz.denied']);
  assert.deepEqual(more, []);
  assert.equal((event!.details as { attempts?: number }).attempts, 3);
});

test('refusals a root field reaches after a lookup are audited too, though another refusal already nulled the answer', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    ids.push((await ok<{ createApiKey: { apiKey: { id: string } } }>(t.adminKey, `mutation { createApiKey(input: { name: "probed ${i}" }) { apiKey { id } } }`)).createApiKey.apiKey.id);
  }
  const probes = ids.map((id, i) => `k${i}: apiKey(id: "${id}") { id }`).join(' ');
  const refused = await gql(memberKey, `{ ${probes} auditEvents { nodes { id } } }`);
  assert.equal(refused.data ?? null, null);
  const events = await eventsOfRequest(t, refused, ['authz.denied']);
  const byOperation = new Map(events.map((e) => [String((e.details as { operation?: string }).operation), e.details as { attempts?: number }]));
  assert.deepEqual([...byOperation.keys()].sort(), ['Query.apiKey', 'Query.auditEvents']);
  assert.equal(byOperation.get('Query.apiKey')!.attempts, 3, 'every probe counted');
});

test('a role name that holds a key is refused (a name cannot be blanked and stay a name)', async () => {
  const secret = generateKey('kl');
  const refused = await gql(t.adminKey, 'mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', { i: { name: secret, permissions: [] } });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal(refused.errors![0]!.message.includes(secret.slice(3, 20)), false, 'the refusal does not quote it');
});

test('audit filters find a target by its id in any case', async () => {
  const upper = memberId.toUpperCase();
  const events = await ok<{ auditEvents: { nodes: Array<{ targetId: string }> } }>(t.adminKey, 'query($f: AuditEventFilter) { auditEvents(filter: $f, first: 5) { nodes { targetId } } }', {
    f: { targetId: upper },
  });
  assert.ok(events.auditEvents.nodes.length > 0);
  assert.ok(events.auditEvents.nodes.every((n) => n.targetId === memberId));
});
