import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { unique } from './helpers/fixtures';
import { createHuman, createKey } from './helpers/key-principals';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

// Several mutation fields in one request run one after another; each answer must show the state
// its own change leaves, not what an earlier field of the same request read.
let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

async function run<T>(query: string, variables: Record<string, unknown>): Promise<T> {
  const response = await postGraphQL<T>(t.url, t.adminKey, query, variables);
  assert.equal(response.errors, undefined, JSON.stringify(response.errors));
  return response.data!;
}

async function newRole(permissions: string[]): Promise<{ id: string; name: string }> {
  const name = unique('seq-role');
  const data = await run<{ createRole: { id: string } }>('mutation($n: String!, $p: [String!]!) { createRole(input: { name: $n, permissions: $p }) { id } }', {
    n: name,
    p: permissions,
  });
  return { id: data.createRole.id, name };
}

interface UserAnswer {
  roles: Array<{ name: string; permissions: string[] }>;
  permissions: string[];
}

test('assignRole then unassignRole in one request: the second answer no longer shows the role', async () => {
  const role = await newRole(['seq:read']);
  const userId = await createHuman(t, [], 'seq-user');
  const data = await run<{ a: UserAnswer; b: UserAnswer }>(
    `mutation($u: ID!, $r: ID!) {
      a: assignRole(userId: $u, roleId: $r) { roles { name permissions } permissions }
      b: unassignRole(userId: $u, roleId: $r) { roles { name permissions } permissions }
    }`,
    { u: userId, r: role.id },
  );
  assert.deepEqual(data.a, { roles: [{ name: role.name, permissions: ['seq:read'] }], permissions: ['seq:read'] });
  assert.deepEqual(data.b, { roles: [], permissions: [] });
});

test("a role changed between two fields: the later answer shows the role's new permissions", async () => {
  const role = await newRole(['seq:read']);
  const userId = await createHuman(t, [], 'seq-user');
  const data = await run<{ a: UserAnswer; c: UserAnswer }>(
    `mutation($u: ID!, $r: ID!) {
      a: assignRole(userId: $u, roleId: $r) { roles { name permissions } permissions }
      b: updateRole(id: $r, input: { permissions: ["seq:write"] }) { permissions }
      c: updateUser(id: $u, input: { name: "renamed-in-sequence" }) { roles { name permissions } permissions }
    }`,
    { u: userId, r: role.id },
  );
  assert.deepEqual(data.a.permissions, ['seq:read']);
  assert.deepEqual(data.c, { roles: [{ name: role.name, permissions: ['seq:write'] }], permissions: ['seq:write'] });
});

test("a key's role changed between two fields: the later answer shows the key's new permissions", async () => {
  const role = await newRole(['seq:read']);
  const ownerId = await createHuman(t, [], 'seq-owner');
  await run('mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: ownerId, r: role.id });
  const { key } = await createKey(t, { name: unique('seq-key'), ownerId, permissions: [] });
  interface KeyAnswer {
    permissions: string[];
    roles: Array<{ permissions: string[] }>;
  }
  const data = await run<{ a: KeyAnswer; c: KeyAnswer }>(
    `mutation($k: ID!, $r: ID!) {
      a: updateApiKey(id: $k, input: { roleIds: [$r] }) { permissions roles { permissions } }
      b: updateRole(id: $r, input: { permissions: ["seq:read", "seq:write"] }) { id }
      c: updateApiKey(id: $k, input: { name: "renamed-in-sequence" }) { permissions roles { permissions } }
    }`,
    { k: key.id, r: role.id },
  );
  assert.deepEqual(data.a, { permissions: ['seq:read'], roles: [{ permissions: ['seq:read'] }] });
  // The owner holds the role too, so the key's effective permissions widen with it.
  assert.deepEqual(data.c.roles, [{ permissions: ['seq:read', 'seq:write'] }]);
  assert.deepEqual([...data.c.permissions].sort(), ['seq:read', 'seq:write']);
});

test("a service account moved to another owner between two fields: each owner's answer shows where it is now", async () => {
  const first = await createHuman(t, [], 'seq-first');
  const second = await createHuman(t, [], 'seq-second');
  const created = await run<{ createServiceAccount: { id: string } }>(
    'mutation($o: ID!, $n: String!) { createServiceAccount(input: { name: $n, ownerId: $o }) { id } }',
    { o: first, n: unique('seq-svc') },
  );
  const sa = created.createServiceAccount.id;
  interface Owned {
    serviceAccounts: Array<{ id: string }>;
  }
  const data = await run<{ before: Owned; move: { owner: { id: string } }; after: Owned }>(
    `mutation($first: ID!, $sa: ID!, $second: ID!) {
      before: updateUser(id: $first, input: {}) { serviceAccounts { id } }
      move: updateUser(id: $sa, input: { ownerId: $second }) { owner { id } }
      after: updateUser(id: $first, input: {}) { serviceAccounts { id } }
    }`,
    { first, sa, second },
  );
  assert.deepEqual(data.before.serviceAccounts, [{ id: sa }]);
  assert.equal(data.move.owner.id, second);
  assert.deepEqual(data.after.serviceAccounts, []);
});
