import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { roleIds } from './helpers/fixtures';
import { createHuman, createKey, principalWithRoles, type KeyPrincipal } from './helpers/key-principals';
import { eventsOfRequest } from './helpers/principals';
import { errorCodes, postGraphQL, startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';

// Changing a role's permissions or deleting it changes everyone holding it: one who may not change
// a user's roles must not change that user's permissions through a role the user holds.
let t: TestServer;
let roles: Map<string, string>;
/** Holds roles:read roles:write users:read users:write keys:own, but not what an auditor holds */
let roleWriter: KeyPrincipal;

before(async () => {
  t = await startTestServer();
  await createRole('role-writer', ['roles:read', 'roles:write', 'users:read', 'users:write', 'keys:own']);
  roles = await roleIds(t);
  roleWriter = await principalWithRoles(t, ['role-writer']);
});
after(() => t.close());

const call = (key: string, query: string, variables?: Record<string, unknown>) => postGraphQL<Record<string, unknown>>(t.url, key, query, variables);
const UPDATE_ROLE = 'mutation($id: ID!, $p: [String!]!) { updateRole(id: $id, input: { permissions: $p }) { permissions } }';
const DELETE_ROLE = 'mutation($id: ID!) { deleteRole(id: $id) }';
const UNASSIGN = 'mutation($u: ID!, $r: ID!) { unassignRole(userId: $u, roleId: $r) { id } }';

async function createRole(name: string, permissions: string[]): Promise<string> {
  const created = await call(t.adminKey, 'mutation($n: String!, $p: [String!]!) { createRole(input: { name: $n, permissions: $p }) { id } }', { n: name, p: permissions });
  assert.equal(created.errors, undefined, JSON.stringify(created.errors));
  return (created.data as { createRole: { id: string } }).createRole.id;
}

async function permissionsOfRole(id: string): Promise<string[] | null> {
  const data = (await call(t.adminKey, 'query($id: ID!) { role(id: $id) { permissions } }', { id })).data as { role: { permissions: string[] } | null };
  return data.role?.permissions ?? null;
}

async function userSeenByAdmin(id: string): Promise<{ permissions: string[]; roles: string[] }> {
  const data = (await call(t.adminKey, 'query($id: ID!) { user(id: $id) { permissions roles { name } } }', { id })).data as {
    user: { permissions: string[]; roles: Array<{ name: string }> };
  };
  return { permissions: [...data.user.permissions].sort(), roles: data.user.roles.map((r) => r.name).sort() };
}

/** FORBIDDEN for escalation, naming none of the holders' permissions, audited once as authz.denied by the caller. */
async function expectRefused(response: GraphQLResponse<Record<string, unknown>>, caller: KeyPrincipal, mutation: string): Promise<void> {
  assert.deepEqual(errorCodes(response), ['FORBIDDEN'], JSON.stringify(response));
  const error = response.errors![0]!;
  assert.equal(error.extensions?.reason, 'ESCALATION');
  assert.match(error.message, /holds permissions you do not hold/);
  assert.doesNotMatch(error.message, /audit:|alerts:|keys:read/, "what the holders hold is not the caller's to read");
  assert.equal(error.extensions?.permissions, undefined);
  const events = await eventsOfRequest(t, response, ['authz.denied']);
  assert.equal(events.length, 1, `one authz.denied event: ${JSON.stringify(events)}`);
  assert.equal(events[0]!.outcome, 'DENIED');
  assert.equal(events[0]!.actor?.id, caller.userId);
  assert.equal(events[0]!.details?.operation, `Mutation.${mutation}`);
}

test("a role held by a user beyond the actor is neither changed nor deleted by it, as that user's roles are not; within its reach it is", async () => {
  const rb = await createRole('rb', ['keys:own']);
  const rc = await createRole('rc', ['users:read']);
  const victim = await createHuman(t, [roles.get('auditor')!, rb, rc], 'victim');
  const victimBefore = await userSeenByAdmin(victim);

  await expectRefused(await call(roleWriter.key, UNASSIGN, { u: victim, r: rb }), roleWriter, 'unassignRole');
  await expectRefused(await call(roleWriter.key, UPDATE_ROLE, { id: rb, p: ['roles:write', 'users:write'] }), roleWriter, 'updateRole');
  await expectRefused(await call(roleWriter.key, UPDATE_ROLE, { id: rb, p: [] }), roleWriter, 'updateRole');
  await expectRefused(await call(roleWriter.key, DELETE_ROLE, { id: rc }), roleWriter, 'deleteRole');
  assert.deepEqual(await permissionsOfRole(rb), ['keys:own'], 'rb is unchanged');
  assert.deepEqual(await permissionsOfRole(rc), ['users:read'], 'rc still exists, unchanged');
  assert.deepEqual(await userSeenByAdmin(victim), victimBefore, "the victim's roles and permissions are unchanged");

  // A relabel changes nobody's permissions: still the actor's to make.
  const relabelled = await call(roleWriter.key, 'mutation($id: ID!) { updateRole(id: $id, input: { description: "keys of their own" }) { id } }', { id: rb });
  assert.equal(relabelled.errors, undefined, JSON.stringify(relabelled.errors));

  // Held only by users within its reach (itself included), the same actor edits and deletes a role.
  const team = await createRole('team', ['keys:own']);
  const colleague = await createHuman(t, [roles.get('member')!, team], 'colleague');
  const assigned = await call(t.adminKey, 'mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: roleWriter.userId, r: team });
  assert.equal(assigned.errors, undefined, JSON.stringify(assigned.errors));
  const widened = await call(roleWriter.key, UPDATE_ROLE, { id: team, p: ['keys:own', 'users:read'] });
  assert.equal(widened.errors, undefined, JSON.stringify(widened.errors));
  assert.deepEqual((await userSeenByAdmin(colleague)).permissions, ['keys:own', 'users:read']);
  const deleted = await call(roleWriter.key, DELETE_ROLE, { id: team });
  assert.deepEqual(deleted.data, { deleteRole: true }, JSON.stringify(deleted.errors));
  assert.deepEqual(await userSeenByAdmin(colleague), { permissions: ['keys:own'], roles: ['member'] });

  // An administrator ('*') reaches everyone.
  const byAdmin = await call(t.adminKey, UPDATE_ROLE, { id: rb, p: ['keys:own', 'keys:verify'] });
  assert.equal(byAdmin.errors, undefined, JSON.stringify(byAdmin.errors));
  assert.ok((await userSeenByAdmin(victim)).permissions.includes('keys:verify'));
  assert.deepEqual((await call(t.adminKey, DELETE_ROLE, { id: rc })).data, { deleteRole: true });
  assert.ok(!(await userSeenByAdmin(victim)).roles.includes('rc'));
});

test("a role carried by a key whose owner is beyond the actor is neither changed nor deleted by it, until that key is revoked", async () => {
  const carried = await createRole('carried', ['keys:own']);
  const owner = await createHuman(t, [roles.get('auditor')!], 'key-owner');
  const key = await createKey(t, { ownerId: owner, name: 'carries a role', roleIds: [carried] });

  await expectRefused(await call(roleWriter.key, UPDATE_ROLE, { id: carried, p: ['keys:own', 'users:write'] }), roleWriter, 'updateRole');
  await expectRefused(await call(roleWriter.key, DELETE_ROLE, { id: carried }), roleWriter, 'deleteRole');
  assert.deepEqual(await permissionsOfRole(carried), ['keys:own'], 'the role is unchanged');
  const keyRoles = (await call(t.adminKey, 'query($id: ID!) { apiKey(id: $id) { roles { id } } }', { id: key.key.id })).data as { apiKey: { roles: Array<{ id: string }> } };
  assert.deepEqual(keyRoles.apiKey.roles.map((r) => r.id), [carried], 'the key still carries it');

  // A revoked key is never used again: the role reaches nobody beyond the actor any more.
  const revoked = await call(t.adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "retired") { status } }', { id: key.key.id });
  assert.equal(revoked.errors, undefined, JSON.stringify(revoked.errors));
  const changed = await call(roleWriter.key, UPDATE_ROLE, { id: carried, p: ['keys:own', 'users:write'] });
  assert.equal(changed.errors, undefined, JSON.stringify(changed.errors));
  assert.deepEqual((await call(roleWriter.key, DELETE_ROLE, { id: carried })).data, { deleteRole: true });
});
