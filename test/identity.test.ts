import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  AliasedCreateRoleDocument,
  CreateApiKeyDocument,
  KtRevokeKeyDocument,
  AssignRoleDocument,
  CreateRoleDocument,
  CreateServiceAccountDocument,
  CreateUserDocument,
  DeleteRoleDocument,
  DisableUserDocument,
  EnableUserDocument,
  RoleDocument,
  RolesDocument,
  UnassignRoleDocument,
  UpdateRoleDocument,
  UpdateUserDocument,
  UserDocument,
  UsersDocument,
} from './generated/graphql';
import { roleIdByName, unique, whileAuditRefuses } from './helpers/fixtures';
import {
  adminPrincipal,
  auditEvents,
  eventsOfRequest,
  expectError,
  expectOneAuditEvent,
  principalWithBuiltIn,
  principalWithPermissions,
  type TestPrincipal,
} from './helpers/principals';
import { errorCodes, postGraphQL, startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';

let t: TestServer;
let admin: TestPrincipal;
let member: TestPrincipal;
let auditor: TestPrincipal;
/** Holds only a custom role ["users:write","roles:write","keys:own"]: may manage identities, must not escalate */
let limited: TestPrincipal & { roleId: string };
const builtIn: Record<string, string> = {};

const LIMITED_PERMISSIONS = ['users:write', 'roles:write', 'keys:own'];
const BUILT_IN_NAMES = ['admin', 'auditor', 'key-manager', 'verifier', 'member'];
/** Well-formed ids that name nothing, and an id that is not a UUID at all */
const UNKNOWN_IDS = [randomUUID(), 'not-a-uuid'];

before(async () => {
  t = await startTestServer();
  admin = await adminPrincipal(t);
  for (const name of BUILT_IN_NAMES) builtIn[name] = await roleIdByName(t, name);
  member = await principalWithBuiltIn(t, 'member');
  auditor = await principalWithBuiltIn(t, 'auditor');
  limited = await principalWithPermissions(t, LIMITED_PERMISSIONS, 'limited');
});
after(() => t.close());

/** As admin: a human with the given roles. */
async function newHuman(roleIds: string[] = [], label = 'human'): Promise<{ id: string; name: string; email: string }> {
  const name = unique(label);
  const email = `${name}@example.test`;
  const data = await t.ok(t.adminKey, CreateUserDocument, { input: { name, email, roleIds } });
  return { id: data.createUser.id, name, email };
}

/** As admin: a service account owned by `ownerId`. */
async function newServiceAccount(ownerId: string): Promise<string> {
  const data = await t.ok(t.adminKey, CreateServiceAccountDocument, { input: { name: unique('svc'), ownerId } });
  return data.createServiceAccount.id;
}

/** As admin: a custom role. */
async function newRole(permissions: string[], label = 'role'): Promise<{ id: string; name: string }> {
  const data = await t.ok(t.adminKey, CreateRoleDocument, { input: { name: unique(label), permissions } });
  return { id: data.createRole.id, name: data.createRole.name };
}

async function roleNamesOf(userId: string): Promise<string[]> {
  const data = await t.ok(t.adminKey, UserDocument, { id: userId });
  assert.ok(data.user, `user ${userId} exists`);
  return data.user.roles.map((r) => r.name).sort();
}

async function allRoleNames(): Promise<string[]> {
  return (await t.ok(t.adminKey, RolesDocument)).roles.map((r) => r.name);
}

async function usersMatching(search: string): Promise<number> {
  return (await t.ok(t.adminKey, UsersDocument, { filter: { search }, first: 10 })).users.totalCount;
}

/**
 * FORBIDDEN, and the denial is audited once as authz.denied (outcome DENIED) by the caller, with
 * details.operation naming the mutation as 'Mutation.<field>', whichever layer refused it.
 */
async function expectDenied(
  response: GraphQLResponse<unknown>,
  caller: TestPrincipal,
  mutation: string,
  target: { type: string; id: string; ids?: Record<string, string> } | null = null,
): Promise<void> {
  expectError(response, 'FORBIDDEN');
  const events = await eventsOfRequest(t, response, ['authz.denied']);
  assert.equal(events.length, 1, `one authz.denied event for the request: ${JSON.stringify(events)}`);
  const event = events[0]!;
  assert.equal(event.outcome, 'DENIED');
  assert.equal(event.actor?.id, caller.userId);
  assert.equal(event.actorKey?.id, caller.keyId);
  assert.equal(event.ip, '127.0.0.1');
  assert.equal(event.details?.operation, `Mutation.${mutation}`, `details.operation: ${JSON.stringify(event.details)}`);
  // What the attempt was aimed at, so the target's history shows it.
  assert.deepEqual([event.targetType, event.targetId], target ? [target.type, target.id] : [null, null], JSON.stringify(event));
  if (target?.ids) assert.deepEqual(event.details?.ids, target.ids);
}

describe('createUser', () => {
  test('creates an active human with its roles and audits user.create (kind HUMAN)', async () => {
    const name = unique('grace');
    const email = `${name}@example.test`;
    const data = await t.ok(t.adminKey, CreateUserDocument, { input: { name, email, roleIds: [builtIn.member!] } });
    const user = data.createUser;
    assert.equal(user.kind, 'HUMAN');
    assert.equal(user.name, name);
    assert.equal(user.email, email);
    assert.equal(user.status, 'ACTIVE');
    assert.equal(user.owner, null);
    assert.deepEqual(user.roles.map((r) => r.name), ['member']);
    assert.deepEqual(user.permissions, ['keys:own']);
    assert.equal(user.createdBy?.id, admin.userId);

    const event = await expectOneAuditEvent(t, { action: 'user.create', targetId: user.id, caller: admin, targetType: 'user' });
    assert.equal(event.details?.kind, 'HUMAN');
  });

  test('rejects a bad email or an empty name as BAD_USER_INPUT and creates nothing', async () => {
    const name = unique('bad-input');
    for (const email of ['not-an-email', 'two words@example.test', 'a@b', '']) {
      expectError(await t.request(t.adminKey, CreateUserDocument, { input: { name, email } }), 'BAD_USER_INPUT');
    }
    for (const empty of ['', '   ']) {
      expectError(
        await t.request(t.adminKey, CreateUserDocument, { input: { name: empty, email: `${name}@example.test` } }),
        'BAD_USER_INPUT',
      );
    }
    // roleIds is an input field, not an id argument: a role that does not exist is bad input.
    for (const roleId of UNKNOWN_IDS) {
      expectError(
        await t.request(t.adminKey, CreateUserDocument, { input: { name, email: `${name}@example.test`, roleIds: [roleId] } }),
        'BAD_USER_INPUT',
      );
    }
    assert.equal(await usersMatching(name), 0);
  });

  test('a duplicate email, whatever its case, is CONFLICT', async () => {
    const name = unique('dup');
    await t.ok(t.adminKey, CreateUserDocument, { input: { name, email: `${name}@example.test` } });
    const again = await t.request(t.adminKey, CreateUserDocument, {
      input: { name: `${name}-2`, email: `${name.toUpperCase()}@Example.TEST` },
    });
    expectError(again, 'CONFLICT');
    assert.equal(await usersMatching(name), 1);
  });
});

describe('createServiceAccount', () => {
  test('creates a SERVICE user owned by a human and audits user.create (kind SERVICE)', async () => {
    const owner = await newHuman();
    const name = unique('ci-bot');
    const data = await t.ok(t.adminKey, CreateServiceAccountDocument, {
      input: { name, ownerId: owner.id, roleIds: [builtIn.verifier!] },
    });
    const sa = data.createServiceAccount;
    assert.equal(sa.kind, 'SERVICE');
    assert.equal(sa.name, name);
    assert.equal(sa.email, null);
    assert.equal(sa.owner?.id, owner.id);
    assert.deepEqual(sa.roles.map((r) => r.name), ['verifier']);

    const ownerView = await t.ok(t.adminKey, UserDocument, { id: owner.id });
    assert.deepEqual(ownerView.user?.serviceAccounts.map((s) => s.id), [sa.id]);

    const event = await expectOneAuditEvent(t, { action: 'user.create', targetId: sa.id, caller: admin, targetType: 'user' });
    assert.equal(event.details?.kind, 'SERVICE');
  });

  test('rejects an empty name, an unknown owner and a non-human owner as BAD_USER_INPUT', async () => {
    const owner = await newHuman();
    const sa = await newServiceAccount(owner.id);
    const disabledOwner = await newHuman([], 'disabled-owner');
    await t.ok(t.adminKey, DisableUserDocument, { id: disabledOwner.id, reason: 'gone' });
    expectError(await t.request(t.adminKey, CreateServiceAccountDocument, { input: { name: ' ', ownerId: owner.id } }), 'BAD_USER_INPUT');
    // ownerId is an input field naming another user: unknown, non-human or disabled is bad input.
    for (const ownerId of [...UNKNOWN_IDS, sa, disabledOwner.id]) {
      const response = await t.request(t.adminKey, CreateServiceAccountDocument, { input: { name: unique('svc'), ownerId } });
      expectError(response, 'BAD_USER_INPUT');
    }
  });
});

describe('updateUser', () => {
  test('renames and re-addresses a human and audits user.update with before and after', async () => {
    const human = await newHuman();
    const name = unique('renamed');
    const email = `${name}@example.test`;
    const data = await t.ok(t.adminKey, UpdateUserDocument, { id: human.id, input: { name, email } });
    assert.equal(data.updateUser.name, name);
    assert.equal(data.updateUser.email, email);

    const event = await expectOneAuditEvent(t, { action: 'user.update', targetId: human.id, caller: admin, targetType: 'user' });
    assert.deepEqual(event.details?.before, { name: human.name, email: human.email });
    assert.deepEqual(event.details?.after, { name, email });
  });

  test('transfers a service account to another human', async () => {
    const first = await newHuman([], 'first-owner');
    const second = await newHuman([], 'second-owner');
    const sa = await newServiceAccount(first.id);

    const data = await t.ok(t.adminKey, UpdateUserDocument, { id: sa, input: { ownerId: second.id } });
    assert.equal(data.updateUser.owner?.id, second.id);
    assert.deepEqual((await t.ok(t.adminKey, UserDocument, { id: first.id })).user?.serviceAccounts, []);
    assert.deepEqual((await t.ok(t.adminKey, UserDocument, { id: second.id })).user?.serviceAccounts.map((s) => s.id), [sa]);

    const event = await expectOneAuditEvent(t, { action: 'user.update', targetId: sa, caller: admin });
    assert.deepEqual(event.details?.before, { ownerId: first.id });
    assert.deepEqual(event.details?.after, { ownerId: second.id });
  });

  test("users:write alone cannot take over someone else's service account (and with it its keys); its owner can hand it over", async () => {
    const owner = await principalWithPermissions(t, ['users:read', 'users:write', 'keys:own'], 'sa-owner');
    const taker = await principalWithPermissions(t, ['users:read', 'users:write', 'keys:own'], 'sa-taker');
    const sa = await newServiceAccount(owner.userId);
    const saKey = (await t.ok(t.adminKey, CreateApiKeyDocument, { input: { ownerId: sa, name: 'pipeline' } })).createApiKey.apiKey.id;

    expectError(await t.request(taker.key, UpdateUserDocument, { id: sa, input: { ownerId: taker.userId } }), 'FORBIDDEN');
    assert.equal((await t.ok(t.adminKey, UserDocument, { id: sa })).user?.owner?.id, owner.userId, 'still its owner');
    const denied = await auditEvents(t, { actions: ['authz.denied'], actorId: taker.userId });
    assert.equal(denied.length, 1, 'the attempt is audited');
    // …so the key stays out of the taker's reach.
    expectError(await t.request(taker.key, KtRevokeKeyDocument, { id: saKey, reason: 'mine now' }), 'FORBIDDEN');

    // Its owner hands it over; keys:write moves it anywhere.
    assert.equal((await t.ok(owner.key, UpdateUserDocument, { id: sa, input: { ownerId: taker.userId } })).updateUser.owner?.id, taker.userId);
    assert.equal((await t.ok(t.adminKey, UpdateUserDocument, { id: sa, input: { ownerId: owner.userId } })).updateUser.owner?.id, owner.userId);
  });

  test('a user mutation whose answer asks for what the caller may not read there is refused before anything changes', async () => {
    const writer = await principalWithPermissions(t, ['users:read', 'users:write'], 'payload-writer');
    const ask = (mutation: string, variables: Record<string, unknown>) => postGraphQL<Record<string, unknown>>(t.url, writer.key, mutation, variables);
    const email = `${unique('ghost')}@example.test`;
    const refused = await ask('mutation($e: String!) { createUser(input: { name: "ghost", email: $e }) { id apiKeys { totalCount } } }', { e: email });
    assert.deepEqual(errorCodes(refused), ['FORBIDDEN']);
    const found = await t.ok(t.adminKey, UsersDocument, { filter: { search: email } });
    assert.equal(found.users.totalCount, 0, 'no user was made');
    // Without the unreadable part the same change goes through.
    const made = await ask('mutation($e: String!) { createUser(input: { name: "ghost", email: $e }) { id } }', { e: email });
    const id = (made.data as { createUser: { id: string } }).createUser.id;

    const renamed = await ask('mutation($id: ID!) { updateUser(id: $id, input: { name: "renamed ghost" }) { name apiKeys { totalCount } } }', { id });
    assert.deepEqual(errorCodes(renamed), ['FORBIDDEN']);
    assert.equal((await t.ok(t.adminKey, UserDocument, { id })).user?.name, 'ghost', 'not renamed');
    const disabled = await ask('mutation($id: ID!) { disableUser(id: $id, reason: "test") { status apiKeys { totalCount } } }', { id });
    assert.deepEqual(errorCodes(disabled), ['FORBIDDEN']);
    assert.equal((await t.ok(t.adminKey, UserDocument, { id })).user?.status, 'ACTIVE', 'not disabled');

    // A bad new owner is the change's to refuse, with its own code.
    const account = await newServiceAccount(writer.userId);
    const badOwner = await ask('mutation($id: ID!, $o: ID!) { updateUser(id: $id, input: { ownerId: $o }) { apiKeys { totalCount } } }', { id: account, o: randomUUID() });
    assert.deepEqual(errorCodes(badOwner), ['BAD_USER_INPUT']);

    // Its own service account's keys are readable with keys:own, so that payload is answered.
    const owner = await principalWithPermissions(t, ['users:read', 'users:write', 'keys:own'], 'payload-owner');
    const own = await postGraphQL<{ createServiceAccount: { apiKeys: { totalCount: number } } }>(t.url, owner.key,
      'mutation($o: ID!) { createServiceAccount(input: { name: "own svc", ownerId: $o }) { apiKeys { totalCount } } }', { o: owner.userId });
    assert.equal(own.data?.createServiceAccount.apiKeys.totalCount, 0, JSON.stringify(own.errors));
  });

  test('unknown ids are NOT_FOUND; bad fields are BAD_USER_INPUT; a taken email is CONFLICT', async () => {
    for (const id of UNKNOWN_IDS) {
      expectError(await t.request(t.adminKey, UpdateUserDocument, { id, input: { name: 'x' } }), 'NOT_FOUND');
    }
    const human = await newHuman();
    const other = await newHuman();
    const sa = await newServiceAccount(other.id);
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: human.id, input: { email: 'nope' } }), 'BAD_USER_INPUT');
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: human.id, input: { name: '  ' } }), 'BAD_USER_INPUT');
    // Service accounts have no email; humans have no owner; a service account cannot own one.
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: sa, input: { email: `${unique('s')}@example.test` } }), 'BAD_USER_INPUT');
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: human.id, input: { ownerId: other.id } }), 'BAD_USER_INPUT');
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: sa, input: { ownerId: sa } }), 'BAD_USER_INPUT');
    expectError(await t.request(t.adminKey, UpdateUserDocument, { id: sa, input: { ownerId: randomUUID() } }), 'BAD_USER_INPUT');
    // Case-insensitive uniqueness holds on update too.
    const taken = await t.request(t.adminKey, UpdateUserDocument, { id: human.id, input: { email: other.email.toUpperCase() } });
    expectError(taken, 'CONFLICT');
    // None of the failures changed anything or wrote an event.
    const unchanged = await t.ok(t.adminKey, UserDocument, { id: human.id });
    assert.equal(unchanged.user?.name, human.name);
    assert.equal(unchanged.user?.email, human.email);
    assert.equal((await auditEvents(t, { actions: ['user.update'], targetId: human.id })).length, 0);
  });
});

describe('disableUser and enableUser', () => {
  test('disable then enable, each audited (user.disable carries the reason)', async () => {
    const human = await newHuman();
    const disabled = await t.ok(t.adminKey, DisableUserDocument, { id: human.id, reason: 'left the team' });
    assert.deepEqual(disabled.disableUser, { id: human.id, status: 'DISABLED' });
    const disableEvent = await expectOneAuditEvent(t, { action: 'user.disable', targetId: human.id, caller: admin, targetType: 'user' });
    assert.equal(disableEvent.details?.reason, 'left the team');

    const enabled = await t.ok(t.adminKey, EnableUserDocument, { id: human.id });
    assert.deepEqual(enabled.enableUser, { id: human.id, status: 'ACTIVE' });
    await expectOneAuditEvent(t, { action: 'user.enable', targetId: human.id, caller: admin, targetType: 'user' });
  });

  test('unknown ids are NOT_FOUND, an empty reason is BAD_USER_INPUT, disabling oneself is CONFLICT', async () => {
    for (const id of UNKNOWN_IDS) {
      expectError(await t.request(t.adminKey, DisableUserDocument, { id, reason: 'r' }), 'NOT_FOUND');
      expectError(await t.request(t.adminKey, EnableUserDocument, { id }), 'NOT_FOUND');
    }
    const human = await newHuman();
    expectError(await t.request(t.adminKey, DisableUserDocument, { id: human.id, reason: '   ' }), 'BAD_USER_INPUT');
    expectError(await t.request(t.adminKey, DisableUserDocument, { id: admin.userId, reason: 'oops' }), 'CONFLICT');
    assert.equal((await t.ok(t.adminKey, UserDocument, { id: human.id })).user?.status, 'ACTIVE');
  });
});

describe('createRole', () => {
  test('creates a custom role and audits role.create', async () => {
    const name = unique('billing-reader');
    const data = await t.ok(t.adminKey, CreateRoleDocument, {
      input: { name, description: 'Reads invoices', permissions: ['invoices:read', 'invoices.v2:export:csv'] },
    });
    const role = data.createRole;
    assert.equal(role.name, name);
    assert.equal(role.description, 'Reads invoices');
    assert.deepEqual([...role.permissions].sort(), ['invoices.v2:export:csv', 'invoices:read']);
    assert.equal(role.builtIn, false);
    assert.equal((await t.ok(t.adminKey, RoleDocument, { id: role.id })).role?.name, name);

    const event = await expectOneAuditEvent(t, { action: 'role.create', targetId: role.id, caller: admin, targetType: 'role' });
    assert.deepEqual(event.details?.after, { name, description: 'Reads invoices', permissions: role.permissions });
  });

  test('rejects invalid permission strings and an empty name as BAD_USER_INPUT', async () => {
    const name = unique('invalid');
    for (const permission of ['Keys:Read', 'keys', 'keys:', ':read', 'keys:read ', '**', 'keys:*:read', '']) {
      const response = await t.request(t.adminKey, CreateRoleDocument, { input: { name, permissions: ['users:read', permission] } });
      expectError(response, 'BAD_USER_INPUT');
    }
    expectError(await t.request(t.adminKey, CreateRoleDocument, { input: { name: ' ', permissions: ['users:read'] } }), 'BAD_USER_INPUT');
    assert.ok(!(await allRoleNames()).includes(name));
  });

  test('a duplicate name, whatever its case and including built-in names, is CONFLICT', async () => {
    const role = await newRole(['invoices:read'], 'Dup-Role');
    expectError(await t.request(t.adminKey, CreateRoleDocument, { input: { name: role.name, permissions: [] } }), 'CONFLICT');
    expectError(await t.request(t.adminKey, CreateRoleDocument, { input: { name: role.name.toLowerCase(), permissions: [] } }), 'CONFLICT');
    expectError(await t.request(t.adminKey, CreateRoleDocument, { input: { name: 'Admin', permissions: [] } }), 'CONFLICT');
    assert.equal((await allRoleNames()).filter((n) => n.toLowerCase() === role.name.toLowerCase()).length, 1);
  });

  test('rolls back the role when its audit event cannot be written', async () => {
    // The audit insert is part of the change: if it fails, the change must not survive.
    await whileAuditRefuses(t.db, 'role.create', 'boom-role', async () => {
      const response = await t.request(t.adminKey, CreateRoleDocument, { input: { name: 'boom-role', permissions: ['boom:read'] } });
      expectError(response, 'INTERNAL_SERVER_ERROR');
      const message = response.errors![0]!.message;
      assert.doesNotMatch(message, /trigger|audit_events|boom|insert|roles/i, `the message hides the database error: ${message}`);

      assert.ok(!(await allRoleNames()).includes('boom-role'), 'the roles query does not list it');
      const rows = await t.db.query<{ id: string }>(`SELECT id FROM roles WHERE name = 'boom-role'`);
      assert.equal(rows.length, 0, 'no row in the roles table');

      // The trigger is that narrow: other roles are still created (and audited) while it is in place.
      await newRole(['invoices:read'], 'unaffected');
    });
    // Nothing half-done was left behind: the name is free.
    await t.ok(t.adminKey, CreateRoleDocument, { input: { name: 'boom-role', permissions: ['boom:read'] } });
  });
});

describe('updateRole', () => {
  test('changes name, description and permissions and audits role.update with before and after', async () => {
    const role = await newRole(['invoices:read'], 'to-update');
    const name = unique('updated');
    const data = await t.ok(t.adminKey, UpdateRoleDocument, {
      id: role.id,
      input: { name, description: 'now writes too', permissions: ['invoices:read', 'invoices:write'] },
    });
    assert.equal(data.updateRole.name, name);
    assert.equal(data.updateRole.description, 'now writes too');
    assert.deepEqual([...data.updateRole.permissions].sort(), ['invoices:read', 'invoices:write']);

    const event = await expectOneAuditEvent(t, { action: 'role.update', targetId: role.id, caller: admin, targetType: 'role' });
    assert.deepEqual(event.details?.before, { name: role.name, description: null, permissions: ['invoices:read'] });
    assert.deepEqual(event.details?.after, { name, description: 'now writes too', permissions: ['invoices:read', 'invoices:write'] });
  });

  test('unknown ids are NOT_FOUND, invalid permissions BAD_USER_INPUT, a taken name CONFLICT', async () => {
    for (const id of UNKNOWN_IDS) {
      expectError(await t.request(t.adminKey, UpdateRoleDocument, { id, input: { description: 'x' } }), 'NOT_FOUND');
    }
    const role = await newRole(['invoices:read']);
    const other = await newRole(['invoices:read']);
    for (const permission of ['Keys:Read', 'keys']) {
      expectError(await t.request(t.adminKey, UpdateRoleDocument, { id: role.id, input: { permissions: [permission] } }), 'BAD_USER_INPUT');
    }
    expectError(await t.request(t.adminKey, UpdateRoleDocument, { id: role.id, input: { name: other.name.toUpperCase() } }), 'CONFLICT');
    const unchanged = await t.ok(t.adminKey, RoleDocument, { id: role.id });
    assert.equal(unchanged.role?.name, role.name);
    assert.deepEqual(unchanged.role?.permissions, ['invoices:read']);
  });
});

describe('deleteRole', () => {
  test('deletes a custom role, takes it from its holders and audits role.delete', async () => {
    const role = await newRole(['invoices:read'], 'to-delete');
    const holder = await newHuman([role.id]);
    const data = await t.ok(t.adminKey, DeleteRoleDocument, { id: role.id });
    assert.equal(data.deleteRole, true);
    assert.equal((await t.ok(t.adminKey, RoleDocument, { id: role.id })).role, null);
    assert.deepEqual(await roleNamesOf(holder.id), []);
    await expectOneAuditEvent(t, { action: 'role.delete', targetId: role.id, caller: admin, targetType: 'role' });
  });

  test('unknown ids are NOT_FOUND', async () => {
    for (const id of UNKNOWN_IDS) expectError(await t.request(t.adminKey, DeleteRoleDocument, { id }), 'NOT_FOUND');
  });
});

describe('built-in roles are protected', () => {
  test('deleting any built-in role is CONFLICT', async () => {
    for (const name of BUILT_IN_NAMES) {
      expectError(await t.request(t.adminKey, DeleteRoleDocument, { id: builtIn[name]! }), 'CONFLICT');
    }
    assert.deepEqual((await allRoleNames()).filter((n) => BUILT_IN_NAMES.includes(n)).sort(), [...BUILT_IN_NAMES].sort());
  });

  test('renaming a built-in role is CONFLICT', async () => {
    for (const name of ['auditor', 'admin']) {
      const response = await t.request(t.adminKey, UpdateRoleDocument, { id: builtIn[name]!, input: { name: unique('renamed') } });
      expectError(response, 'CONFLICT');
      assert.equal((await t.ok(t.adminKey, RoleDocument, { id: builtIn[name]! })).role?.name, name);
    }
  });

  test('taking the admin role from the last active administrator is CONFLICT', async () => {
    // The bootstrap admin is the only active human holding admin in this database.
    const response = await t.request(t.adminKey, UnassignRoleDocument, { userId: admin.userId, roleId: builtIn.admin! });
    expectError(response, 'CONFLICT');
    assert.deepEqual(await roleNamesOf(admin.userId), ['admin']);
  });

  test('removing * from admin is CONFLICT', async () => {
    const response = await t.request(t.adminKey, UpdateRoleDocument, { id: builtIn.admin!, input: { permissions: ['users:read'] } });
    expectError(response, 'CONFLICT');
    assert.deepEqual((await t.ok(t.adminKey, RoleDocument, { id: builtIn.admin! })).role?.permissions, ['*']);
    assert.equal((await auditEvents(t, { actions: ['role.update'], targetId: builtIn.admin! })).length, 0);
  });
});

describe('assignRole and unassignRole', () => {
  test('assign then unassign a role, each audited against the user', async () => {
    const human = await newHuman();
    const role = await newRole(['invoices:read'], 'assignable');
    const assigned = await t.ok(t.adminKey, AssignRoleDocument, { userId: human.id, roleId: role.id });
    assert.deepEqual(assigned.assignRole.roles.map((r) => r.name), [role.name]);
    assert.deepEqual(assigned.assignRole.permissions, ['invoices:read']);
    const assignEvent = await expectOneAuditEvent(t, { action: 'role.assign', targetId: human.id, caller: admin, targetType: 'user' });
    assert.equal(assignEvent.details?.roleId, role.id);

    const unassigned = await t.ok(t.adminKey, UnassignRoleDocument, { userId: human.id, roleId: role.id });
    assert.deepEqual(unassigned.unassignRole.roles, []);
    assert.deepEqual(unassigned.unassignRole.permissions, []);
    const unassignEvent = await expectOneAuditEvent(t, { action: 'role.unassign', targetId: human.id, caller: admin, targetType: 'user' });
    assert.equal(unassignEvent.details?.roleId, role.id);
  });

  test('an unknown user or role (including a non-UUID id) is NOT_FOUND', async () => {
    const human = await newHuman();
    const role = await newRole(['invoices:read']);
    for (const unknown of UNKNOWN_IDS) {
      expectError(await t.request(t.adminKey, AssignRoleDocument, { userId: unknown, roleId: role.id }), 'NOT_FOUND');
      expectError(await t.request(t.adminKey, AssignRoleDocument, { userId: human.id, roleId: unknown }), 'NOT_FOUND');
      expectError(await t.request(t.adminKey, UnassignRoleDocument, { userId: unknown, roleId: role.id }), 'NOT_FOUND');
      expectError(await t.request(t.adminKey, UnassignRoleDocument, { userId: human.id, roleId: unknown }), 'NOT_FOUND');
    }
    assert.deepEqual(await roleNamesOf(human.id), []);
  });
});

describe('principals holding only member or auditor are FORBIDDEN on every identity mutation', () => {
  interface Attempt {
    mutation: string;
    run: (key: string) => Promise<GraphQLResponse<unknown>>;
    target?: () => { type: string; id: string; ids?: Record<string, string> };
  }
  let target: { id: string };
  let role: { id: string; name: string };
  let sa: string;

  before(async () => {
    target = await newHuman([], 'denied-target');
    role = await newRole(['invoices:read'], 'denied-role');
    sa = await newServiceAccount(target.id);
  });

  const attempts: Attempt[] = [
    {
      mutation: 'createUser',
      run: (key) => t.request(key, CreateUserDocument, { input: { name: 'sneaky', email: `${unique('sneaky')}@example.test` } }),
    },
    {
      mutation: 'createServiceAccount',
      run: (key) => t.request(key, CreateServiceAccountDocument, { input: { name: 'sneaky', ownerId: target.id } }),
      target: () => ({ type: 'user', id: target.id, ids: { 'input.ownerId': target.id } }),
    },
    { mutation: 'updateUser', run: (key) => t.request(key, UpdateUserDocument, { id: sa, input: { name: 'sneaky' } }), target: () => ({ type: 'user', id: sa }) },
    { mutation: 'disableUser', run: (key) => t.request(key, DisableUserDocument, { id: target.id, reason: 'sneaky' }), target: () => ({ type: 'user', id: target.id }) },
    { mutation: 'enableUser', run: (key) => t.request(key, EnableUserDocument, { id: target.id }), target: () => ({ type: 'user', id: target.id }) },
    { mutation: 'createRole', run: (key) => t.request(key, CreateRoleDocument, { input: { name: unique('sneaky'), permissions: [] } }) },
    { mutation: 'updateRole', run: (key) => t.request(key, UpdateRoleDocument, { id: role.id, input: { description: 'sneaky' } }), target: () => ({ type: 'role', id: role.id }) },
    { mutation: 'deleteRole', run: (key) => t.request(key, DeleteRoleDocument, { id: role.id }), target: () => ({ type: 'role', id: role.id, ids: { id: role.id } }) },
    {
      mutation: 'assignRole',
      run: (key) => t.request(key, AssignRoleDocument, { userId: target.id, roleId: role.id }),
      target: () => ({ type: 'user', id: target.id, ids: { userId: target.id, roleId: role.id } }),
    },
    {
      mutation: 'unassignRole',
      run: (key) => t.request(key, UnassignRoleDocument, { userId: target.id, roleId: role.id }),
      target: () => ({ type: 'user', id: target.id, ids: { userId: target.id, roleId: role.id } }),
    },
  ];

  for (const attempt of attempts) {
    test(`${attempt.mutation}: FORBIDDEN for member and auditor, each audited as authz.denied`, async () => {
      await expectDenied(await attempt.run(member.key), member, attempt.mutation, attempt.target?.() ?? null);
      await expectDenied(await attempt.run(auditor.key), auditor, attempt.mutation, attempt.target?.() ?? null);
    });
  }

  test('the denied attempts changed nothing', async () => {
    const user = await t.ok(t.adminKey, UserDocument, { id: target.id });
    assert.equal(user.user?.status, 'ACTIVE');
    assert.deepEqual(user.user?.roles, []);
    assert.notEqual((await t.ok(t.adminKey, UserDocument, { id: sa })).user?.name, 'sneaky');
    const stillThere = await t.ok(t.adminKey, RoleDocument, { id: role.id });
    assert.equal(stillThere.role?.description, null);
    assert.equal(await usersMatching('sneaky'), 0);
    assert.ok(!(await allRoleNames()).some((n) => n.startsWith('sneaky')));
  });
});

describe(`no escalation: a principal holding ${JSON.stringify(LIMITED_PERMISSIONS)}`, () => {
  test('cannot createRole with a permission it lacks, wildcards included', async () => {
    for (const permissions of [['audit:read'], ['*'], ['keys:*'], ['users:*'], ['keys:own', 'audit:read']]) {
      const name = unique('escalate');
      const response = await t.request(limited.key, CreateRoleDocument, { input: { name, permissions } });
      await expectDenied(response, limited, 'createRole');
      assert.ok(!(await allRoleNames()).includes(name), `${name} was not created`);
    }
  });

  test('an escalation denial names the mutation, not the alias the client gave it', async () => {
    const aliased = await t.request(limited.key, AliasedCreateRoleDocument, { input: { name: unique('alias'), permissions: ['*'] } });
    await expectDenied(aliased, limited, 'createRole');
  });

  test('can createRole within its own permissions (audited with itself as actor)', async () => {
    const data = await t.ok(limited.key, CreateRoleDocument, {
      input: { name: unique('within'), permissions: ['keys:own', 'users:write'] },
    });
    assert.deepEqual([...data.createRole.permissions].sort(), ['keys:own', 'users:write']);
    await expectOneAuditEvent(t, { action: 'role.create', targetId: data.createRole.id, caller: limited, targetType: 'role' });
  });

  test('cannot updateRole to add a permission it lacks, but can change within its own', async () => {
    const own = await t.ok(limited.key, CreateRoleDocument, { input: { name: unique('own'), permissions: ['keys:own'] } });
    const roleId = own.createRole.id;
    for (const permissions of [['keys:own', 'audit:read'], ['*'], ['keys:*']]) {
      // Refused by the no-escalation rule, not the permission check: the target is named all the same.
      await expectDenied(await t.request(limited.key, UpdateRoleDocument, { id: roleId, input: { permissions } }), limited, 'updateRole', { type: 'role', id: roleId });
    }
    assert.deepEqual((await t.ok(t.adminKey, RoleDocument, { id: roleId })).role?.permissions, ['keys:own']);

    const widened = await t.ok(limited.key, UpdateRoleDocument, { id: roleId, input: { permissions: ['keys:own', 'roles:write'] } });
    assert.deepEqual([...widened.updateRole.permissions].sort(), ['keys:own', 'roles:write']);
  });

  test('cannot rename or re-describe a role holding more than itself, but can relabel one within', async () => {
    const wide = await newRole(['users:write', 'audit:read'], 'wide');
    for (const input of [{ name: unique('harmless') }, { description: 'safe to assign' }]) {
      await expectDenied(await t.request(limited.key, UpdateRoleDocument, { id: wide.id, input }), limited, 'updateRole', { type: 'role', id: wide.id });
    }
    const unchanged = (await t.ok(t.adminKey, RoleDocument, { id: wide.id })).role;
    assert.equal(unchanged?.name, wide.name);
    assert.equal(unchanged?.description ?? null, null);
    await expectDenied(await t.request(limited.key, UpdateRoleDocument, { id: builtIn.auditor!, input: { description: 'nothing to see' } }), limited, 'updateRole', {
      type: 'role',
      id: builtIn.auditor!,
    });

    const own = await t.ok(limited.key, CreateRoleDocument, { input: { name: unique('mine'), permissions: ['keys:own'] } });
    const renamed = unique('renamed');
    const relabelled = await t.ok(limited.key, UpdateRoleDocument, { id: own.createRole.id, input: { name: renamed, description: 'mine' } });
    assert.equal(relabelled.updateRole.name, renamed);
  });

  test('cannot assignRole a role holding more than itself, but can assign one within', async () => {
    const human = await newHuman([], 'assign-target');
    const readerRole = await newRole(['audit:read'], 'reader');
    for (const roleId of [builtIn.admin!, builtIn.auditor!, readerRole.id]) {
      await expectDenied(await t.request(limited.key, AssignRoleDocument, { userId: human.id, roleId }), limited, 'assignRole', {
        type: 'user',
        id: human.id,
        ids: { userId: human.id, roleId },
      });
    }
    assert.deepEqual(await roleNamesOf(human.id), []);

    const assigned = await t.ok(limited.key, AssignRoleDocument, { userId: human.id, roleId: builtIn.member! });
    assert.deepEqual(assigned.assignRole.roles.map((r) => r.name), ['member']);
    await expectOneAuditEvent(t, { action: 'role.assign', targetId: human.id, caller: limited, targetType: 'user' });
  });

  test('cannot createUser or createServiceAccount with roleIds of a role holding more', async () => {
    const name = unique('escalated-user');
    for (const roleId of [builtIn.admin!, builtIn['key-manager']!]) {
      const response = await t.request(limited.key, CreateUserDocument, { input: { name, email: `${name}@example.test`, roleIds: [roleId] } });
      await expectDenied(response, limited, 'createUser');
    }
    assert.equal(await usersMatching(name), 0);

    const owner = await newHuman();
    const saName = unique('escalated-svc');
    const response = await t.request(limited.key, CreateServiceAccountDocument, {
      input: { name: saName, ownerId: owner.id, roleIds: [builtIn.admin!] },
    });
    await expectDenied(response, limited, 'createServiceAccount', { type: 'user', id: owner.id });
    assert.equal(await usersMatching(saName), 0);

    // Within its own permissions it may.
    const ok = await t.ok(limited.key, CreateUserDocument, {
      input: { name: `${name}-ok`, email: `${name}-ok@example.test`, roleIds: [builtIn.member!] },
    });
    assert.equal(ok.createUser.createdBy?.id, limited.userId);
    await expectOneAuditEvent(t, { action: 'user.create', targetId: ok.createUser.id, caller: limited, targetType: 'user' });
  });

  test('cannot change, disable or strip roles from a user who holds more than itself', async () => {
    const theAdmin = { type: 'user', id: admin.userId };
    await expectDenied(await t.request(limited.key, UpdateUserDocument, { id: admin.userId, input: { name: 'pwned' } }), limited, 'updateUser', theAdmin);
    await expectDenied(await t.request(limited.key, DisableUserDocument, { id: admin.userId, reason: 'pwned' }), limited, 'disableUser', theAdmin);
    await expectDenied(
      await t.request(limited.key, UnassignRoleDocument, { userId: admin.userId, roleId: builtIn.admin! }),
      limited,
      'unassignRole',
      { ...theAdmin, ids: { userId: admin.userId, roleId: builtIn.admin! } },
    );
    const adminNow = await t.ok(t.adminKey, UserDocument, { id: admin.userId });
    assert.equal(adminNow.user?.name, 'admin');
    assert.equal(adminNow.user?.status, 'ACTIVE');
    assert.deepEqual(adminNow.user?.roles.map((r) => r.name), ['admin']);
  });
});
