import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import { holdLock } from './helpers/database';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

// A role deleted while it is being granted: the grant and the delete serialise, never a 500.
let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

test('deleteRole racing createApiKey(roleIds) for the same role: both answer with contract codes and no key keeps the role', async () => {
  const role = await postGraphQL<{ createRole: { id: string } }>(t.url, t.adminKey, 'mutation { createRole(input: { name: "doomed", permissions: ["reports:read"] }) { id } }');
  const roleId = role.data!.createRole.id;
  // Holding inserts into api_key_roles stops the grant between its role check and its insert.
  const held = await holdLock(t.db.url, 'LOCK TABLE api_key_roles IN EXCLUSIVE MODE');
  let outcomes: Array<Awaited<ReturnType<typeof postGraphQL>>>;
  try {
    const creating = postGraphQL(t.url, t.adminKey, 'mutation($r: ID!) { createApiKey(input: { name: "racer", roleIds: [$r] }) { apiKey { id } } }', { r: roleId });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const deleting = postGraphQL(t.url, t.adminKey, 'mutation($r: ID!) { deleteRole(id: $r) }', { r: roleId });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await held.release();
    outcomes = await Promise.all([creating, deleting]);
  } finally {
    await held.release();
  }
  const codes = outcomes.map((o) => errorCodes(o)[0] ?? 'OK');
  assert.ok(codes.every((c) => c === 'OK' || c === 'BAD_USER_INPUT'), JSON.stringify(outcomes.map((o) => o.errors)));
  assert.equal(codes[1], 'OK', 'the role is deleted');
  const holders = await t.db.query('SELECT 1 FROM api_key_roles WHERE role_id = $1', [roleId]);
  assert.equal(holders.length, 0, 'no key holds the deleted role');
});

/** A fresh custom role and a fresh human, for one race. */
async function roleAndOwner(label: string): Promise<{ roleId: string; ownerId: string }> {
  const created = await postGraphQL<{ createRole: { id: string }; createUser: { id: string } }>(
    t.url,
    t.adminKey,
    'mutation($r: String!, $n: String!, $e: String!) { createRole(input: { name: $r, permissions: ["reports:read"] }) { id } createUser(input: { name: $n, email: $e }) { id } }',
    { r: `contested-${label}`, n: `Owner ${label}`, e: `owner-${label}@example.com` },
  );
  return { roleId: created.data!.createRole.id, ownerId: created.data!.createUser.id };
}

test('a grant waiting for its owner holds no role: deleteRole is not stuck behind it (no deadlock with assignRole)', async () => {
  const { roleId, ownerId } = await roleAndOwner('grant');
  // What an assignRole in progress holds: the user's row, locked for update.
  const held = await holdLock(t.db.url, 'SELECT 1 FROM users WHERE id = $1 FOR UPDATE', [ownerId]);
  try {
    const creating = postGraphQL(t.url, t.adminKey, 'mutation($o: ID!, $r: ID!) { createApiKey(input: { name: "racer", ownerId: $o, roleIds: [$r] }) { apiKey { id } } }', {
      o: ownerId,
      r: roleId,
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Were the grant holding the role while it waits, this would wait too, and the assignment
    // (next wanting the role) would close the cycle.
    const deleted = await Promise.race([
      postGraphQL(t.url, t.adminKey, 'mutation($r: ID!) { deleteRole(id: $r) }', { r: roleId }),
      new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), 5000)),
    ]);
    assert.notEqual(deleted, 'stuck', 'deleteRole waited for a grant that was itself waiting for the owner');
    assert.deepEqual(errorCodes(deleted as Awaited<ReturnType<typeof postGraphQL>>), []);
    await held.release();
    const grant = await creating;
    assert.deepEqual(errorCodes(grant), ['BAD_USER_INPUT'], 'the grant names a role that no longer exists');
  } finally {
    await held.release();
  }
  const holders = await t.db.query('SELECT 1 FROM api_key_roles WHERE role_id = $1', [roleId]);
  assert.equal(holders.length, 0);
});

test('every writer locks users before roles and keys: a held user row never leaves a role or a key locked behind it', async () => {
  const { roleId, ownerId } = await roleAndOwner('order');
  const key = await postGraphQL<{ createApiKey: { apiKey: { id: string } } }>(t.url, t.adminKey, 'mutation($o: ID!) { createApiKey(input: { name: "rotating", ownerId: $o }) { apiKey { id } } }', { o: ownerId });
  const keyId = key.data!.createApiKey.apiKey.id;
  const held = await holdLock(t.db.url, 'SELECT 1 FROM users WHERE id = $1 FOR UPDATE', [ownerId]);
  const probe = new Client({ connectionString: t.db.url });
  await probe.connect();
  try {
    const waiting = [
      postGraphQL(t.url, t.adminKey, 'mutation($o: ID!, $r: ID!) { createServiceAccount(input: { name: "svc-race", ownerId: $o, roleIds: [$r] }) { id } }', { o: ownerId, r: roleId }),
      postGraphQL(t.url, t.adminKey, 'mutation($id: ID!) { rotateApiKey(id: $id) { apiKey { id } } }', { id: keyId }),
    ];
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Both wait for the owner's row, holding neither the role nor the key.
    await probe.query('BEGIN');
    await probe.query('SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE NOWAIT', [keyId]);
    await probe.query('SELECT 1 FROM roles WHERE id = $1 FOR UPDATE NOWAIT', [roleId]);
    await probe.query('ROLLBACK');
    await held.release();
    const outcomes = await Promise.all(waiting);
    assert.deepEqual(outcomes.map((o) => errorCodes(o)), [[], []], JSON.stringify(outcomes.map((o) => o.errors)));
  } finally {
    await probe.end();
    await held.release();
  }
});
