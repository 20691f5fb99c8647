import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
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
  const blocker = new Client({ connectionString: t.db.url });
  await blocker.connect();
  let outcomes: Array<Awaited<ReturnType<typeof postGraphQL>>>;
  try {
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE api_key_roles IN EXCLUSIVE MODE');
    const creating = postGraphQL(t.url, t.adminKey, 'mutation($r: ID!) { createApiKey(input: { name: "racer", roleIds: [$r] }) { apiKey { id } } }', { r: roleId });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const deleting = postGraphQL(t.url, t.adminKey, 'mutation($r: ID!) { deleteRole(id: $r) }', { r: roleId });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await blocker.query('COMMIT');
    outcomes = await Promise.all([creating, deleting]);
  } finally {
    await blocker.end();
  }
  const codes = outcomes.map((o) => errorCodes(o)[0] ?? 'OK');
  assert.ok(codes.every((c) => c === 'OK' || c === 'BAD_USER_INPUT'), JSON.stringify(outcomes.map((o) => o.errors)));
  assert.equal(codes[1], 'OK', 'the role is deleted');
  const held = await t.db.query('SELECT 1 FROM api_key_roles WHERE role_id = $1', [roleId]);
  assert.equal(held.length, 0, 'no key holds the deleted role');
});
