import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import { roleIds } from './helpers/fixtures';
import { createHuman, createKey, createServiceAccount, principalWithRoles, verify, type KeyPrincipal } from './helpers/key-principals';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

// Security paths an adversarial review found: reviving or widening a key, or stopping a service
// account, that can do more than the one acting.
let t: TestServer;
let roles: Map<string, string>;
let keyManager: KeyPrincipal;
let member: KeyPrincipal;
let verifier: KeyPrincipal;

before(async () => {
  t = await startTestServer();
  roles = await roleIds(t);
  keyManager = await principalWithRoles(t, ['key-manager']);
  member = await principalWithRoles(t, ['member']);
  verifier = await principalWithRoles(t, ['verifier']);
});
after(() => t.close());

const call = (key: string, query: string, variables?: Record<string, unknown>) => postGraphQL<Record<string, unknown>>(t.url, key, query, variables);
const ENABLE = 'mutation($id: ID!) { enableApiKey(id: $id) { status } }';
const DISABLE = 'mutation($id: ID!) { disableApiKey(id: $id) { status } }';
const UPDATE = 'mutation($id: ID!, $i: UpdateApiKeyInput!) { updateApiKey(id: $id, input: $i) { name permissions allowedCidrs } }';

async function denied(key: string, query: string, variables: Record<string, unknown>): Promise<void> {
  const result = await call(key, query, variables);
  assert.deepEqual(errorCodes(result), ['FORBIDDEN'], JSON.stringify(result));
  assert.equal((result.errors![0]!.extensions as { reason?: string }).reason, 'ESCALATION');
}

test("a key-manager cannot enable or widen an administrator's disabled '*' key, but may still disable it", async () => {
  const adminId = await createHuman(t, [roles.get('admin')!], 'other-admin');
  const restricted = await createKey(t, { ownerId: adminId, name: 'fenced admin key', permissions: ['*'], allowedCidrs: ['10.0.0.0/8'], remaining: 5 });
  assert.equal((await call(keyManager.key, DISABLE, { id: restricted.key.id })).errors, undefined, 'narrowing stays allowed');
  await denied(keyManager.key, ENABLE, { id: restricted.key.id });
  await denied(keyManager.key, UPDATE, { id: restricted.key.id, i: { allowedCidrs: [], remaining: null } });
  await denied(keyManager.key, UPDATE, { id: restricted.key.id, i: { name: 'renamed' } });
  assert.equal((await verify(t, verifier.key, { key: restricted.secret })).code, 'DISABLED', 'the key stayed disabled');
  // Narrowed into the key-manager's own reach in the same change, it is theirs to shape.
  const narrowed = await call(keyManager.key, UPDATE, { id: restricted.key.id, i: { permissions: ['keys:read'] } });
  assert.equal(narrowed.errors, undefined, JSON.stringify(narrowed.errors));
  assert.equal((await call(keyManager.key, ENABLE, { id: restricted.key.id })).errors, undefined);
  const result = await verify(t, verifier.key, { key: restricted.secret, ip: '10.1.2.3' });
  assert.deepEqual([result.code, result.permissions], ['VALID', ['keys:read']]);
});

test("a member cannot revive their administrator-role service account's '*' key, only their own keys", async () => {
  const serviceAccount = await createServiceAccount(t, member.userId, [roles.get('admin')!], 'powerful-svc');
  const strong = await createKey(t, { ownerId: serviceAccount, name: 'svc star', permissions: ['*'] });
  await call(t.adminKey, DISABLE, { id: strong.key.id });
  await denied(member.key, ENABLE, { id: strong.key.id });
  await denied(member.key, UPDATE, { id: strong.key.id, i: { name: 'revived', allowedCidrs: [] } });
  assert.equal((await verify(t, verifier.key, { key: strong.secret })).code, 'DISABLED');

  // Their own '*' key can do only what they can: enabling it (after their own disable: an
  // administrator's stands) or changing it escalates nothing.
  const spare = await createKey(t, { ownerId: member.userId, name: 'spare', permissions: ['*'] });
  await call(member.key, DISABLE, { id: spare.key.id });
  assert.equal((await call(member.key, ENABLE, { id: spare.key.id })).errors, undefined);
  const renamed = await call(member.key, UPDATE, { id: spare.key.id, i: { name: 'still mine' } });
  assert.equal(renamed.errors, undefined, JSON.stringify(renamed.errors));
});

test("disabling a human reaches their service accounts: refused to one who holds less than those accounts", async () => {
  const helper = await principalWithRoles(t, ['member'], 'user-admin');
  const roleId = (await call(t.adminKey, 'mutation { createRole(input: { name: "user-admin", permissions: ["users:read", "users:write", "roles:read", "keys:own"] }) { id } }'))
    .data as { createRole: { id: string } };
  await call(t.adminKey, 'mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: helper.userId, r: roleId.createRole.id });
  const ownerId = await createHuman(t, [roles.get('member')!], 'svc-owner');
  const serviceAccount = await createServiceAccount(t, ownerId, [roles.get('admin')!], 'admin-svc');
  const svcKey = await createKey(t, { ownerId: serviceAccount, name: 'svc key', permissions: ['*'] });

  const disableUser = 'mutation($id: ID!) { disableUser(id: $id, reason: "offboarding") { status } }';
  await denied(helper.key, disableUser, { id: serviceAccount });
  await denied(helper.key, disableUser, { id: ownerId });
  assert.equal((await verify(t, verifier.key, { key: svcKey.secret })).code, 'VALID', 'the service account still works');
  // A human without such service accounts is still theirs to disable.
  const plain = await createHuman(t, [roles.get('member')!], 'plain');
  assert.equal((await call(helper.key, disableUser, { id: plain })).errors, undefined);
});

test('revokeAllApiKeys survives a deadlock with a writer that locks the key, then the user (the usage writer did)', async () => {
  const ownerId = await createHuman(t, [roles.get('member')!], 'deadlocked');
  const key = await createKey(t, { ownerId, name: 'to revoke' });
  const writer = new Client({ connectionString: t.db.url });
  await writer.connect();
  try {
    await writer.query('BEGIN');
    await writer.query('UPDATE api_keys SET last_used_at = now() WHERE id = $1', [key.key.id]);
    // revokeAll locks the user, then waits for the key; the writer then wants the user: a cycle.
    const revoking = call(t.adminKey, 'mutation($u: ID!) { revokeAllApiKeys(userId: $u, reason: "incident") }', { u: ownerId });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const writerDone = writer.query('UPDATE users SET last_active_at = now() WHERE id = $1', [ownerId]).then(
      () => writer.query('COMMIT'),
      async () => writer.query('ROLLBACK'),
    );
    const result = await revoking;
    await writerDone;
    assert.equal(result.errors, undefined, JSON.stringify(result.errors));
    assert.equal((result.data as { revokeAllApiKeys: number }).revokeAllApiKeys, 1);
    assert.equal((await verify(t, verifier.key, { key: key.secret })).code, 'REVOKED');
  } finally {
    await writer.end();
  }
});

test("a change that changes nothing is refused too on a key beyond the actor: its answer would show the key", async () => {
  const adminId = await createHuman(t, [roles.get('admin')!], 'quiet-admin');
  const secretive = await createKey(t, { ownerId: adminId, name: 'admin star', permissions: ['*'], metadata: { vault: 'payroll' } });
  const readBack = 'mutation($id: ID!, $i: UpdateApiKeyInput!) { updateApiKey(id: $id, input: $i) { metadata lastUsedIp } }';
  await denied(keyManager.key, readBack, { id: secretive.key.id, i: {} });
  await denied(keyManager.key, 'mutation($id: ID!) { enableApiKey(id: $id) { metadata } }', { id: secretive.key.id });
  // Within reach, a no-op answers with the key and records nothing.
  const own = await createKey(t, { ownerId: member.userId, name: 'member key', permissions: ['keys:own'] });
  const before = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE target_id = $1`, [own.key.id]);
  const noop = await call(member.key, readBack, { id: own.key.id, i: {} });
  assert.equal(noop.errors, undefined, JSON.stringify(noop.errors));
  await call(t.adminKey, '{ auditEvents(first: 1) { nodes { id } } }'); // seals what is staged
  const afterwards = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE target_id = $1`, [own.key.id]);
  assert.equal(afterwards[0]!.n, before[0]!.n, 'a change of nothing is not an audit event');
});

test("rotation weighs what the key can do and, for anyone but its owner, what it is granted: an owner rotates their own '*' key, nobody else one beyond them", async () => {
  const ROTATE = 'mutation($id: ID!) { rotateApiKey(id: $id) { secret apiKey { permissions } } }';
  const mine = await createKey(t, { ownerId: member.userId, name: 'member star', permissions: ['*'] });
  const rotated = await call(member.key, ROTATE, { id: mine.key.id });
  assert.equal(rotated.errors, undefined, JSON.stringify(rotated.errors));
  const successor = (rotated.data as { rotateApiKey: { secret: string; apiKey: { permissions: string[] } } }).rotateApiKey;
  assert.deepEqual(successor.apiKey.permissions, ['keys:own']);
  const result = await verify(t, verifier.key, { key: successor.secret });
  assert.deepEqual([result.code, result.permissions], ['VALID', ['keys:own']], "'*' is still bounded by the owner");

  const adminId = await createHuman(t, [roles.get('admin')!], 'rotated-admin');
  const strong = await createKey(t, { ownerId: adminId, name: 'admin star', permissions: ['*'] });
  await denied(keyManager.key, ROTATE, { id: strong.key.id });
  assert.equal((await t.db.query('SELECT id FROM api_keys WHERE rotated_from_id = $1', [strong.key.id])).length, 0, 'not rotated');

  // A '*' grant on someone else's key is not the key-manager's to reissue, even while its owner
  // holds little: the new secret would be theirs, and would grow with the owner.
  const reader = await createHuman(t, [], 'star-reader');
  const weak = await createKey(t, { ownerId: reader, name: 'reader star', permissions: ['*'] });
  await denied(keyManager.key, ROTATE, { id: weak.key.id });
  assert.equal((await t.db.query('SELECT id FROM api_keys WHERE rotated_from_id = $1', [weak.key.id])).length, 0, 'not rotated');
  // Nor through a key one made for the owner: it acts as the owner, but was granted less than '*'.
  await call(t.adminKey, 'mutation { createRole(input: { name: "keys-writer-own", permissions: ["keys:write", "keys:read", "keys:own", "users:read"] }) { id } }');
  const minter = await principalWithRoles(t, ['keys-writer-own']);
  const holder = await createHuman(t, [roles.get('member')!], 'star-holder');
  const held = await createKey(t, { ownerId: holder, name: 'holder star', permissions: ['*'] });
  await denied(minter.key, ROTATE, { id: held.key.id });
  const made = await call(minter.key, 'mutation($o: ID!) { createApiKey(input: { ownerId: $o, name: "made for them", permissions: ["keys:own"] }) { secret } }', { o: holder });
  const madeSecret = (made.data as { createApiKey: { secret: string } }).createApiKey.secret;
  await denied(madeSecret, ROTATE, { id: held.key.id });
  assert.equal((await t.db.query('SELECT id FROM api_keys WHERE rotated_from_id = $1', [held.key.id])).length, 0, 'not rotated');
  // Nor is a '*' key of one's own service account.
  const account = await createServiceAccount(t, member.userId, [], 'star-svc');
  const svcStar = await createKey(t, { ownerId: account, name: 'svc star', permissions: ['*'] });
  await denied(member.key, ROTATE, { id: svcStar.key.id });
});

test('a key payload part the caller may not read is refused before the key is made: no secret is lost', async () => {
  await call(t.adminKey, 'mutation { createRole(input: { name: "keys-writer", permissions: ["keys:write"] }) { id } }');
  const writer = await principalWithRoles(t, ['keys-writer']);
  const target = await createHuman(t, [], 'payload-target');
  const keysNamed = async (name: string) => (await t.db.query('SELECT id FROM api_keys WHERE name = $1', [name])).length;
  // owner is non-null: refused after the fact it would null the answer, secret and all.
  for (const selection of ['owner { email }', '...K']) {
    const name = `payload ${selection}`;
    const fragment = selection === '...K' ? ' fragment K on ApiKey { owner { email } }' : '';
    const refused = await call(writer.key, `mutation($o: ID!, $n: String!) { createApiKey(input: { ownerId: $o, name: $n }) { secret apiKey { id ${selection} } } }${fragment}`, { o: target, n: name });
    assert.deepEqual(errorCodes(refused), ['FORBIDDEN'], JSON.stringify(refused));
    assert.equal(await keysNamed(name), 0, `nothing was made (${selection})`);
  }
  const made = await call(writer.key, 'mutation($o: ID!) { createApiKey(input: { ownerId: $o, name: "plain payload" }) { secret apiKey { id } } }', { o: target });
  const created = (made.data as { createApiKey: { secret: string; apiKey: { id: string } } } | null)?.createApiKey;
  assert.ok(created?.secret, JSON.stringify(made));
  const rotate = await call(writer.key, 'mutation($id: ID!) { rotateApiKey(id: $id) { secret apiKey { owner { id } } } }', { id: created.apiKey.id });
  assert.deepEqual(errorCodes(rotate), ['FORBIDDEN']);
  assert.equal((await t.db.query('SELECT id FROM api_keys WHERE rotated_from_id = $1', [created.apiKey.id])).length, 0, 'not rotated');
  // The caller's own keys: everything in the payload is theirs to read.
  const own = await call(writer.key, 'mutation { createApiKey(input: { name: "mine" }) { secret apiKey { owner { id } usage { valid } } } }');
  assert.equal(own.errors, undefined, JSON.stringify(own.errors));
});

test("refusing a change to a principal that holds more does not list what it holds; refusing a grant names what was asked", async () => {
  const auditor = await createHuman(t, [roles.get('auditor')!], 'listed-auditor');
  const userWriter = await principalWithRoles(t, ['member'], 'user-writer');
  const role = (await call(t.adminKey, 'mutation { createRole(input: { name: "user-writer", permissions: ["users:write", "keys:own"] }) { id } }')).data as { createRole: { id: string } };
  await call(t.adminKey, 'mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: userWriter.userId, r: role.createRole.id });
  for (const [query, variables] of [
    ['mutation($id: ID!) { disableUser(id: $id, reason: "x") { id } }', { id: auditor }],
    ['mutation($id: ID!) { updateUser(id: $id, input: {}) { id } }', { id: auditor }],
  ] as const) {
    const refused = await call(userWriter.key, query, variables);
    assert.deepEqual(errorCodes(refused), ['FORBIDDEN']);
    const error = refused.errors![0]!;
    assert.equal((error.extensions as { reason?: string }).reason, 'ESCALATION');
    assert.doesNotMatch(error.message, /audit:read|roles:read/, 'the target\'s permissions are not the actor\'s to read');
    assert.equal((error.extensions as { permissions?: unknown }).permissions, undefined);
  }
  const grant = await call(userWriter.key, 'mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: userWriter.userId, r: roles.get('auditor')! });
  assert.match(grant.errors![0]!.message, /audit:read/, 'what the actor asked to grant is named');
});

test("the payload check looks into the owner's service accounts, honours @include, and leaves rotatedFrom as rotated", async () => {
  const serviceAccount = await createServiceAccount(t, member.userId, [], 'payload-svc');
  const name = 'svc payload key';
  const refused = await call(member.key, 'mutation($o: ID!, $n: String!) { createApiKey(input: { ownerId: $o, name: $n }) { secret apiKey { owner { serviceAccounts { id } } } } }', { o: serviceAccount, n: name });
  assert.deepEqual(errorCodes(refused), ['FORBIDDEN'], JSON.stringify(refused));
  assert.equal((await t.db.query('SELECT id FROM api_keys WHERE name = $1', [name])).length, 0, 'nothing was made');
  // The member reads its own service accounts: asked through its own key's owner, that is fine.
  const own = await call(member.key, 'mutation { createApiKey(input: { name: "own svc list" }) { secret apiKey { owner { serviceAccounts { id } } } } }');
  assert.equal(own.errors, undefined, JSON.stringify(own.errors));

  // A selection left out by @include(if: false) is not fetched, so not refused.
  const target = await createHuman(t, [], 'include-target');
  const writer = await principalWithRoles(t, ['keys-writer']);
  const skipped = await call(writer.key, 'mutation($o: ID!, $w: Boolean!) { createApiKey(input: { ownerId: $o, name: "conditional" }) { secret apiKey { owner @include(if: $w) { id } } } }', { o: target, w: false });
  assert.equal(skipped.errors, undefined, JSON.stringify(skipped.errors));

  // Checking the owner reads the key before rotating it; the answer still shows it as rotated.
  const key = await createKey(t, { name: 'to rotate', permissions: [] });
  const rotated = await call(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 3600) { apiKey { owner { id } rotatedFrom { id expiresAt } } } }', { id: key.key.id });
  const from = (rotated.data as { rotateApiKey: { apiKey: { rotatedFrom: { id: string; expiresAt: string | null } } } }).rotateApiKey.apiKey.rotatedFrom;
  assert.equal(from.id, key.key.id);
  assert.ok(from.expiresAt && Math.abs(new Date(from.expiresAt).getTime() - (Date.now() + 3_600_000)) < 60_000, `rotatedFrom.expiresAt ${from.expiresAt}`);
});

test('two administrators revoking all of each other\'s keys at once wait for one another: no deadlock to retry', async () => {
  const retries = async () => {
    const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
    return Number(text.split('\n').find((l) => l.startsWith('keyledger_transaction_retries_total '))!.split(' ')[1]);
  };
  const a = await createHuman(t, [roles.get('admin')!], 'mutual-a');
  const b = await createHuman(t, [roles.get('admin')!], 'mutual-b');
  const before = await retries();
  for (let round = 0; round < 5; round++) {
    const [keyA, keyB] = await Promise.all([createKey(t, { ownerId: a, name: `a${round}`, permissions: ['*'] }), createKey(t, { ownerId: b, name: `b${round}`, permissions: ['*'] })]);
    const revokeAll = 'mutation($u: ID!) { revokeAllApiKeys(userId: $u, reason: "mutual") }';
    const outcomes = await Promise.all([call(keyA.secret, revokeAll, { u: b }), call(keyB.secret, revokeAll, { u: a })]);
    assert.deepEqual(outcomes.map((o) => errorCodes(o)), [[], []], JSON.stringify(outcomes));
  }
  assert.equal((await retries()) - before, 0, 'each waited for the other (users locked in id order), none was a deadlock victim');
});

test("pushing back a rotated key's expiry is FORBIDDEN, not CONFLICT, to one who may not change the key: its rotation is not told", async () => {
  const adminId = await createHuman(t, [roles.get('admin')!], 'rotated-admin');
  const rotatedKey = await createKey(t, { ownerId: adminId, name: 'rotated star', permissions: ['*'] });
  await call(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 3600) { apiKey { id } } }', { id: rotatedKey.key.id });
  await denied(keyManager.key, UPDATE, { id: rotatedKey.key.id, i: { expiresAt: '2099-01-01T00:00:00Z' } });
  const byAdmin = await call(t.adminKey, UPDATE, { id: rotatedKey.key.id, i: { expiresAt: '2099-01-01T00:00:00Z' } });
  assert.deepEqual(errorCodes(byAdmin), ['CONFLICT']);
});

test("revokeAllApiKeys reaches a service account's key rotated at that moment: the successor is revoked too", async () => {
  const role = (await call(t.adminKey, 'mutation { createRole(input: { name: "svc-rotating", permissions: ["keys:own"] }) { id } }')).data as { createRole: { id: string } };
  const roleId = role.createRole.id;
  const ownerId = await createHuman(t, [roles.get('member')!], 'rotating-owner');
  const serviceAccount = await createServiceAccount(t, ownerId, [roleId], 'rotating-svc');
  const key = await createKey(t, { ownerId: serviceAccount, name: 'rotating', roleIds: [roleId] });
  // Holding the role pauses the rotation inside its transaction (it reads the key's roles as its
  // foreign keys would), after it has taken its users.
  const roleHolder = new Client({ connectionString: t.db.url });
  await roleHolder.connect();
  try {
    await roleHolder.query('BEGIN');
    await roleHolder.query('SELECT 1 FROM roles WHERE id = $1 FOR UPDATE', [roleId]);
    const waiting = async (n: number) => {
      for (let i = 0; i < 200; i++) {
        const [row] = (await roleHolder.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows as Array<{ n: number }>;
        if (row!.n >= n) return;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      assert.fail(`${n} statements never waited on a lock`);
    };
    const rotating = call(t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id) { secret apiKey { id } } }', { id: key.key.id });
    await waiting(1);
    const revoking = call(t.adminKey, 'mutation($u: ID!) { revokeAllApiKeys(userId: $u, reason: "incident") }', { u: ownerId });
    await waiting(2);
    await roleHolder.query('COMMIT');
    const rotated = await rotating;
    const revoked = await revoking;
    assert.equal(rotated.errors, undefined, JSON.stringify(rotated.errors));
    assert.equal(revoked.errors, undefined, JSON.stringify(revoked.errors));
    const successor = (rotated.data as { rotateApiKey: { secret: string } }).rotateApiKey.secret;
    assert.equal((revoked.data as { revokeAllApiKeys: number }).revokeAllApiKeys, 2, 'the key and its successor');
    assert.equal((await verify(t, verifier.key, { key: successor })).code, 'REVOKED');
  } finally {
    await roleHolder.query('ROLLBACK').catch(() => {});
    await roleHolder.end();
  }
});
