import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { buildSchema, type GraphQLObjectType } from 'graphql';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';
import { unique } from './helpers/fixtures';
import {
  PRINCIPAL_NAMES,
  createHuman,
  createPrincipals,
  gqlOk,
  type Principal,
  type PrincipalName,
} from './helpers/table-principals';

// The compiled file runs from dist/test; the emitted schema and the pending list live at the repo root.
const ROOT = path.join(__dirname, '..', '..');
const SCHEMA_PATH = path.join(ROOT, 'src', 'schema', 'schema.graphql');
const PENDING_PATH = path.join(ROOT, 'contract-pending.txt');

type Variables = Record<string, unknown>;

interface Fixtures {
  principals: Map<PrincipalName, Principal>;
  /** A throwaway human with no roles: read, renamed, given roles, owner of new service accounts */
  targetUserId: string;
  /** Holds the throwaway role, so unassignRole has something to remove */
  assignedUserId: string;
  /** Disabled in before, so enableUser has something to do */
  disabledUserId: string;
  /** A throwaway custom role with a non-system permission */
  roleId: string;
  auditEventId: string;
  /** A throwaway alert rule (never fires: huge threshold) that updateAlertRule changes */
  alertRuleId: string;
  /** One OPEN alert per principal to acknowledge, and another to resolve: each call acts on its own */
  acknowledgeAlertIds: Map<PrincipalName, string>;
  resolveAlertIds: Map<PrincipalName, string>;
}

interface Case {
  /** Principals expected to get past authorization; every other principal must get FORBIDDEN */
  allowed: readonly PrincipalName[];
  query: string;
  /** Called once per principal, so a call can get its own fresh object or unique name */
  variables: (f: Fixtures, principal: Principal) => Variables | Promise<Variables>;
}

const EVERYONE = PRINCIPAL_NAMES;
const USERS_READ: readonly PrincipalName[] = ['admin', 'auditor', 'key-manager'];
const ADMIN_ONLY: readonly PrincipalName[] = ['admin'];
const KEYS_READ_OR_OWN: readonly PrincipalName[] = ['admin', 'auditor', 'key-manager', 'member'];
const KEYS_WRITE_OR_OWN: readonly PrincipalName[] = ['admin', 'key-manager', 'member'];
const VERIFIERS: readonly PrincipalName[] = ['admin', 'verifier'];
const AUDIT_READ: readonly PrincipalName[] = ['admin', 'auditor'];
const ALERTS_READ: readonly PrincipalName[] = ['admin', 'auditor'];
const ALERTS_WRITE: readonly PrincipalName[] = ['admin'];

let t: TestServer;
let f: Fixtures;

/** A key owned by the principal itself, so keys:own may manage it and only the permission decides. */
async function freshOwnKey(principal: Principal): Promise<string> {
  const data = await gqlOk<{ createApiKey: { apiKey: { id: string } } }>(
    t,
    t.adminKey,
    'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } } }',
    { input: { ownerId: principal.userId, name: unique('tbl own key') } },
  );
  return data.createApiKey.apiKey.id;
}

/** A service account of the principal, so revoking all its keys never touches the principal's own key. */
async function freshOwnServiceAccount(principal: Principal): Promise<string> {
  const data = await gqlOk<{ createServiceAccount: { id: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateServiceAccountInput!) { createServiceAccount(input: $input) { id } }',
    { input: { name: unique('tbl sa'), ownerId: principal.userId } },
  );
  return data.createServiceAccount.id;
}

async function freshRole(): Promise<string> {
  const data = await gqlOk<{ createRole: { id: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateRoleInput!) { createRole(input: $input) { id } }',
    { input: { name: unique('tbl-role'), permissions: ['invoices:read'] } },
  );
  return data.createRole.id;
}

/** An alert rule that cannot fire (threshold far above anything a test does). */
async function freshAlertRule(): Promise<string> {
  const data = await gqlOk<{ createAlertRule: { id: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateAlertRuleInput!) { createAlertRule(input: $input) { id } }',
    { input: { name: unique('tbl rule'), metric: 'VERIFY_CALLS', threshold: 1_000_000, windowSeconds: 60, severity: 'LOW' } },
  );
  return data.createAlertRule.id;
}

/**
 * `count` OPEN alerts, each of its own: a fresh key is revoked and then presented once (one
 * REVOKED_KEY_USED alert per key, raised asynchronously: polled for).
 */
async function openAlerts(count: number, ownerId: string): Promise<string[]> {
  const keyIds: string[] = [];
  const secrets: string[] = [];
  for (let i = 0; i < count; i++) {
    const created = await gqlOk<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
      t,
      t.adminKey,
      'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }',
      { input: { ownerId, name: unique('tbl alert key'), permissions: [] } },
    );
    await gqlOk(t, t.adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "alert fixture") { id } }', {
      id: created.createApiKey.apiKey.id,
    });
    keyIds.push(created.createApiKey.apiKey.id);
    secrets.push(created.createApiKey.secret);
  }
  const verified = await gqlOk<{ verifyKeys: Array<{ code: string }> }>(
    t,
    t.adminKey,
    'query($inputs: [VerifyKeyInput!]!) { verifyKeys(inputs: $inputs) { code } }',
    { inputs: secrets.map((key) => ({ key })) },
  );
  assert.ok(verified.verifyKeys.every((r) => r.code === 'REVOKED'), 'the fixture keys verify as REVOKED');
  const deadline = Date.now() + 5000;
  for (;;) {
    const data = await gqlOk<{ alerts: { nodes: Array<{ id: string; key: { id: string } | null; status: string }> } }>(
      t,
      t.adminKey,
      'query { alerts(filter: { types: [REVOKED_KEY_USED], status: OPEN }, first: 500) { nodes { id status key { id } } } }',
    );
    const byKey = new Map(data.alerts.nodes.filter((a) => a.key).map((a) => [a.key!.id, a.id]));
    if (keyIds.every((id) => byKey.has(id))) return keyIds.map((id) => byKey.get(id)!);
    assert.ok(Date.now() < deadline, `REVOKED_KEY_USED alerts for the fixture keys within 5 s (have ${byKey.size})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Expected authorization of every Query and Mutation field. A new operation must be added here
 * (or to contract-pending.txt) or the coverage test fails.
 */
const TABLE: Record<string, Case> = {
  'Query.viewer': { allowed: EVERYONE, query: 'query { viewer { user { id } permissions } }', variables: () => ({}) },
  'Query.systemPermissions': { allowed: EVERYONE, query: 'query { systemPermissions }', variables: () => ({}) },
  // Another user's id: needs users:read (reading oneself is tested separately below).
  'Query.user': {
    allowed: USERS_READ,
    query: 'query($id: ID!) { user(id: $id) { id name } }',
    variables: (x) => ({ id: x.targetUserId }),
  },
  'Query.users': { allowed: USERS_READ, query: 'query { users(first: 5) { totalCount nodes { id } } }', variables: () => ({}) },
  'Query.role': {
    allowed: ['admin', 'auditor'],
    query: 'query($id: ID!) { role(id: $id) { id name } }',
    variables: (x) => ({ id: x.roleId }),
  },
  'Query.roles': { allowed: ['admin', 'auditor'], query: 'query { roles { id name } }', variables: () => ({}) },
  'Query.auditEvents': {
    allowed: ['admin', 'auditor'],
    query: 'query { auditEvents(first: 5) { nodes { id action } } }',
    variables: () => ({}),
  },
  'Query.auditEvent': {
    allowed: ['admin', 'auditor'],
    query: 'query($id: ID!) { auditEvent(id: $id) { id action } }',
    variables: (x) => ({ id: x.auditEventId }),
  },
  'Mutation.createUser': {
    allowed: ADMIN_ONLY,
    query: 'mutation($input: CreateUserInput!) { createUser(input: $input) { id } }',
    variables: () => ({ input: { name: unique('tbl user'), email: `${unique('tbl')}@example.com` } }),
  },
  'Mutation.createServiceAccount': {
    allowed: ADMIN_ONLY,
    query: 'mutation($input: CreateServiceAccountInput!) { createServiceAccount(input: $input) { id } }',
    variables: (x) => ({ input: { name: unique('tbl svc'), ownerId: x.targetUserId } }),
  },
  'Mutation.updateUser': {
    allowed: ADMIN_ONLY,
    query: 'mutation($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { id name } }',
    variables: (x) => ({ id: x.targetUserId, input: { name: unique('renamed') } }),
  },
  // A fresh user per call: never disables a principal or the shared target.
  'Mutation.disableUser': {
    allowed: ADMIN_ONLY,
    query: 'mutation($id: ID!, $reason: String!) { disableUser(id: $id, reason: $reason) { id status } }',
    variables: async () => ({ id: await createHuman(t, 'to disable', []), reason: 'authorization table' }),
  },
  'Mutation.enableUser': {
    allowed: ADMIN_ONLY,
    query: 'mutation($id: ID!) { enableUser(id: $id) { id status } }',
    variables: (x) => ({ id: x.disabledUserId }),
  },
  'Mutation.assignRole': {
    allowed: ADMIN_ONLY,
    query: 'mutation($userId: ID!, $roleId: ID!) { assignRole(userId: $userId, roleId: $roleId) { id } }',
    variables: (x) => ({ userId: x.targetUserId, roleId: x.roleId }),
  },
  'Mutation.unassignRole': {
    allowed: ADMIN_ONLY,
    query: 'mutation($userId: ID!, $roleId: ID!) { unassignRole(userId: $userId, roleId: $roleId) { id } }',
    variables: (x) => ({ userId: x.assignedUserId, roleId: x.roleId }),
  },
  'Mutation.createRole': {
    allowed: ADMIN_ONLY,
    query: 'mutation($input: CreateRoleInput!) { createRole(input: $input) { id } }',
    variables: () => ({ input: { name: unique('tbl-role'), permissions: ['invoices:read'] } }),
  },
  'Mutation.updateRole': {
    allowed: ADMIN_ONLY,
    query: 'mutation($id: ID!, $input: UpdateRoleInput!) { updateRole(id: $id, input: $input) { id } }',
    variables: (x) => ({ id: x.roleId, input: { description: unique('description') } }),
  },
  // A fresh role per call: the shared throwaway role stays for the other cases.
  'Mutation.deleteRole': {
    allowed: ADMIN_ONLY,
    query: 'mutation($id: ID!) { deleteRole(id: $id) }',
    variables: async () => ({ id: await freshRole() }),
  },
  // keys:write, or keys:own for a key of one's own (no ownerId: the caller). No grants, so no escalation.
  'Mutation.createApiKey': {
    allowed: ['admin', 'key-manager', 'member'],
    query: 'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } secret } }',
    variables: () => ({ input: { name: unique('tbl key'), permissions: [] } }),
  },
  'Query.auditCounts': {
    allowed: AUDIT_READ,
    query: 'query { auditCounts(groupBy: ACTION, limit: 3) { key count } }',
    variables: () => ({}),
  },
  'Query.auditTimeline': { allowed: AUDIT_READ, query: 'query { auditTimeline(bucket: DAY) { start count } }', variables: () => ({}) },
  'Query.auditIntegrity': { allowed: AUDIT_READ, query: 'query { auditIntegrity { ok checkedEvents } }', variables: () => ({}) },
  'Query.apiKey': {
    allowed: KEYS_READ_OR_OWN,
    query: 'query($id: ID!) { apiKey(id: $id) { id } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Query.apiKeys': { allowed: KEYS_READ_OR_OWN, query: 'query { apiKeys(first: 5) { totalCount nodes { id } } }', variables: () => ({}) },
  'Query.usageReport': {
    allowed: KEYS_READ_OR_OWN,
    query: 'query($from: DateTimeISO!, $to: DateTimeISO!) { usageReport(from: $from, to: $to) { valid } }',
    variables: () => ({ from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date().toISOString() }),
  },
  // A malformed key is a result, not an error: only the permission can refuse the call.
  'Query.verifyKey': {
    allowed: VERIFIERS,
    query: 'query { verifyKey(input: { key: "kl_not-a-key" }) { valid code } }',
    variables: () => ({}),
  },
  'Query.verifyKeys': {
    allowed: VERIFIERS,
    query: 'query { verifyKeys(inputs: [{ key: "kl_not-a-key" }]) { valid code } }',
    variables: () => ({}),
  },
  'Mutation.updateApiKey': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($id: ID!) { updateApiKey(id: $id, input: { name: "renamed" }) { id } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Mutation.rotateApiKey': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($id: ID!) { rotateApiKey(id: $id) { apiKey { id } } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Mutation.revokeApiKey': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "table") { id } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Mutation.revokeAllApiKeys': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($userId: ID!) { revokeAllApiKeys(userId: $userId, reason: "table") }',
    variables: async (_x, p) => ({ userId: await freshOwnServiceAccount(p) }),
  },
  'Mutation.disableApiKey': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($id: ID!) { disableApiKey(id: $id) { id } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Mutation.enableApiKey': {
    allowed: KEYS_WRITE_OR_OWN,
    query: 'mutation($id: ID!) { enableApiKey(id: $id) { id } }',
    variables: async (_x, p) => ({ id: await freshOwnKey(p) }),
  },
  'Query.alerts': {
    allowed: ALERTS_READ,
    query: 'query { alerts(first: 5) { totalCount nodes { id type status } } }',
    variables: () => ({}),
  },
  'Query.alertRules': { allowed: ALERTS_READ, query: 'query { alertRules { id name } }', variables: () => ({}) },
  // A valid input (no scope, positive numbers): only the permission can refuse it.
  'Mutation.createAlertRule': {
    allowed: ALERTS_WRITE,
    query: 'mutation($input: CreateAlertRuleInput!) { createAlertRule(input: $input) { id } }',
    variables: () => ({
      input: { name: unique('tbl rule'), metric: 'DENIED_ACTIONS', threshold: 1_000_000, windowSeconds: 60, severity: 'INFO' },
    }),
  },
  'Mutation.updateAlertRule': {
    allowed: ALERTS_WRITE,
    query: 'mutation($id: ID!, $input: UpdateAlertRuleInput!) { updateAlertRule(id: $id, input: $input) { id name } }',
    variables: (x) => ({ id: x.alertRuleId, input: { name: unique('tbl rule renamed') } }),
  },
  // A fresh rule per call: a missing check would delete it, and the admin still finds its own.
  'Mutation.deleteAlertRule': {
    allowed: ALERTS_WRITE,
    query: 'mutation($id: ID!) { deleteAlertRule(id: $id) }',
    variables: async () => ({ id: await freshAlertRule() }),
  },
  // Each principal gets its own OPEN alert, so an earlier (wrongly allowed) call cannot turn the
  // admin's call into CONFLICT, and a denied call leaves its alert OPEN.
  'Mutation.acknowledgeAlert': {
    allowed: ALERTS_WRITE,
    query: 'mutation($id: ID!) { acknowledgeAlert(id: $id) { id status } }',
    variables: (x, p) => ({ id: x.acknowledgeAlertIds.get(p.name)! }),
  },
  'Mutation.resolveAlert': {
    allowed: ALERTS_WRITE,
    query: 'mutation($id: ID!) { resolveAlert(id: $id) { id status } }',
    variables: (x, p) => ({ id: x.resolveAlertIds.get(p.name)! }),
  },
};

/** Codes that mean the call never reached an authorization decision, so it proves nothing. */
const VACUOUS = new Set(['UNAUTHENTICATED', 'GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED', 'BAD_REQUEST', 'INTERNAL_SERVER_ERROR']);

/** Admin last: denied principals act on live objects first, so a missing check would really mutate. */
const CALL_ORDER: readonly PrincipalName[] = ['viewer', 'member', 'verifier', 'key-manager', 'auditor', 'admin'];

const BUILT_IN_PERMISSIONS: Record<PrincipalName, string[]> = {
  admin: ['*'],
  auditor: ['alerts:read', 'audit:export', 'audit:read', 'keys:read', 'roles:read', 'users:read'],
  'key-manager': ['keys:read', 'keys:write', 'users:read'],
  verifier: ['keys:verify'],
  member: ['keys:own'],
  viewer: [],
};

function schemaOperations(): string[] {
  const schema = buildSchema(readFileSync(SCHEMA_PATH, 'utf8'));
  const roots = [schema.getQueryType(), schema.getMutationType()].filter((type): type is GraphQLObjectType => Boolean(type));
  return roots.flatMap((type) => Object.keys(type.getFields()).map((field) => `${type.name}.${field}`));
}

function pendingElements(): Set<string> {
  const lines = readFileSync(PENDING_PATH, 'utf8').split('\n');
  return new Set(lines.map((line) => line.replace(/#.*$/, '').trim()).filter((line) => line.length > 0));
}

before(async () => {
  t = await startTestServer();
  const principals = await createPrincipals(t);
  const roleId = await freshRole();
  const targetUserId = await createHuman(t, 'table target', []);
  const assignedUserId = await createHuman(t, 'table assigned', [roleId]);
  const disabledUserId = await createHuman(t, 'table disabled', []);
  await gqlOk(t, t.adminKey, 'mutation($id: ID!) { disableUser(id: $id, reason: "fixture") { id } }', { id: disabledUserId });
  const events = await gqlOk<{ auditEvents: { nodes: Array<{ id: string }> } }>(
    t,
    t.adminKey,
    'query { auditEvents(first: 1) { nodes { id } } }',
  );
  assert.equal(events.auditEvents.nodes.length, 1, 'fixtures wrote audit events');
  const alertRuleId = await freshAlertRule();
  const alertIds = await openAlerts(PRINCIPAL_NAMES.length * 2, targetUserId);
  const acknowledgeAlertIds = new Map(PRINCIPAL_NAMES.map((name, i) => [name, alertIds[i]!] as const));
  const resolveAlertIds = new Map(PRINCIPAL_NAMES.map((name, i) => [name, alertIds[PRINCIPAL_NAMES.length + i]!] as const));
  f = {
    principals,
    targetUserId,
    assignedUserId,
    disabledUserId,
    roleId,
    auditEventId: events.auditEvents.nodes[0]!.id,
    alertRuleId,
    acknowledgeAlertIds,
    resolveAlertIds,
  };
});
after(() => t.close());

test('every Query and Mutation of the emitted schema is in the table, unless contract-pending', () => {
  const operations = schemaOperations();
  const pending = pendingElements();
  assert.ok(operations.includes('Query.viewer') && operations.includes('Mutation.createUser'), 'the schema was read');
  const missing = operations.filter((op) => !(op in TABLE) && !pending.has(op));
  assert.deepEqual(missing, [], `operations without an authorization expectation: ${missing.join(', ')}`);
  // A stale row would silently test nothing once its operation is renamed or removed.
  const stale = Object.keys(TABLE).filter((op) => !operations.includes(op));
  assert.deepEqual(stale, [], `table rows for operations the schema does not have: ${stale.join(', ')}`);
});

test('each principal holds exactly its built-in role permissions (the table depends on it)', async () => {
  for (const name of PRINCIPAL_NAMES) {
    const p = f.principals.get(name)!;
    const data = await gqlOk<{ viewer: { user: { id: string }; permissions: string[] } }>(
      t,
      p.key,
      'query { viewer { user { id } permissions } }',
    );
    assert.equal(data.viewer.user.id, p.userId, name);
    assert.deepEqual([...data.viewer.permissions].sort(), BUILT_IN_PERMISSIONS[name], name);
  }
});

for (const [operation, row] of Object.entries(TABLE)) {
  test(`authorization of ${operation}`, async () => {
    const field = operation.split('.')[1]!;
    const expected: Record<string, string> = {};
    const actual: Record<string, string> = {};
    const problems: string[] = [];
    for (const name of CALL_ORDER) {
      const principal = f.principals.get(name)!;
      const result = await postGraphQL<Record<string, unknown>>(t.url, principal.key, row.query, await row.variables(f, principal));
      const codes = errorCodes(result);
      const denied = codes.includes('FORBIDDEN');
      expected[name] = row.allowed.includes(name) ? 'allow' : 'deny';
      actual[name] = denied ? 'deny' : 'allow';
      const vacuous = codes.filter((code) => VACUOUS.has(code));
      if (vacuous.length > 0) problems.push(`${name}: ${JSON.stringify(result.errors)}`);
      // A denial must not leak the result alongside the error.
      if (denied && result.data && result.data[field] != null) problems.push(`${name}: denied but data returned`);
    }
    assert.deepEqual(actual, expected, `${operation}: allow/deny per principal`);
    assert.deepEqual(problems, [], `${operation}: calls that did not reach an authorization decision`);
  });
}

// Runs after the table rows above (node:test runs a file's tests in order): the denied calls on
// alerts must have changed nothing, the admin's calls must have done their work.
test('denied acknowledgeAlert/resolveAlert calls left their alerts OPEN; the admin\'s took effect', async () => {
  const data = await gqlOk<{ alerts: { nodes: Array<{ id: string; status: string }> } }>(
    t,
    t.adminKey,
    'query { alerts(filter: { types: [REVOKED_KEY_USED] }, first: 500) { nodes { id status } } }',
  );
  const status = new Map(data.alerts.nodes.map((a) => [a.id, a.status]));
  const actual: Record<string, string> = {};
  const expected: Record<string, string> = {};
  for (const name of PRINCIPAL_NAMES) {
    actual[`acknowledge by ${name}`] = String(status.get(f.acknowledgeAlertIds.get(name)!));
    actual[`resolve by ${name}`] = String(status.get(f.resolveAlertIds.get(name)!));
    expected[`acknowledge by ${name}`] = ALERTS_WRITE.includes(name) ? 'ACKNOWLEDGED' : 'OPEN';
    expected[`resolve by ${name}`] = ALERTS_WRITE.includes(name) ? 'RESOLVED' : 'OPEN';
  }
  assert.deepEqual(actual, expected);
});

test('user(id) on oneself is allowed for every principal, even without users:read', async () => {
  for (const name of PRINCIPAL_NAMES) {
    const p = f.principals.get(name)!;
    const data = await gqlOk<{ user: { id: string } | null }>(t, p.key, 'query($id: ID!) { user(id: $id) { id } }', { id: p.userId });
    assert.equal(data.user?.id, p.userId, name);
  }
});

test('keys:own covers only keys of oneself and of one\'s service accounts', async () => {
  const member = f.principals.get('member')!;
  const createKey = 'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { owner { id } } } }';
  const svc = await gqlOk<{ createServiceAccount: { id: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateServiceAccountInput!) { createServiceAccount(input: $input) { id } }',
    { input: { name: unique('member svc'), ownerId: member.userId } },
  );
  const own = await postGraphQL<{ createApiKey: { apiKey: { owner: { id: string } } } }>(t.url, member.key, createKey, {
    input: { ownerId: svc.createServiceAccount.id, name: 'svc key', permissions: [] },
  });
  assert.deepEqual(errorCodes(own), []);
  assert.equal(own.data?.createApiKey.apiKey.owner.id, svc.createServiceAccount.id);

  const others = await postGraphQL(t.url, member.key, createKey, { input: { ownerId: f.targetUserId, name: 'not mine', permissions: [] } });
  assert.deepEqual(errorCodes(others), ['FORBIDDEN']);
});
