import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';
import { builtInRoleIds, gqlOk } from './helpers/table-principals';

/** What this file created, to compute each filter's expected answer independently of the server. */
interface Made {
  id: string;
  kind: 'HUMAN' | 'SERVICE';
  name: string;
  email: string | null;
  ownerId: string | null;
  roleName: string;
  roleId: string;
  disabled: boolean;
}

interface UserRow {
  id: string;
  owner: { id: string } | null;
  serviceAccounts: Array<{ id: string }>;
  roles: Array<{ name: string }>;
  permissions: string[];
  createdBy: { id: string } | null;
}

const COUNT = 100;
const RELATIONS_QUERY = `query($first: Int, $filter: UserFilter) {
  users(first: $first, filter: $filter) {
    nodes { id owner { id } serviceAccounts { id } roles { name } permissions createdBy { id } }
  }
}`;

let t: TestServer;
let adminId: string;
const made: Made[] = [];
const roleIds = new Map<string, string>();
const rolePermissions = new Map<string, string[]>();

async function dbQueries(): Promise<number> {
  const metric = await t.server.metrics.dbQueries.get();
  return metric.values[0]?.value ?? 0;
}

/**
 * The counter once the server is quiet: background work (e.g. buffered key-usage writes flushed on a
 * timer) lands before the reading, so a window holds exactly one request and what it caused.
 */
async function settledDbQueries(): Promise<number> {
  let last = await dbQueries();
  for (let i = 0; i < 20; i++) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const now = await dbQueries();
    if (now === last) return now;
    last = now;
  }
  throw new Error('the server never stopped sending SQL statements');
}

/**
 * SQL statements one request costs, authentication and its deferred bookkeeping included. Timers
 * (the audit seal pass every second) can only add to a window, so the least of three is the cost.
 */
async function measure(first: number, filter: Record<string, unknown> | null = null): Promise<{ queries: number; rows: UserRow[] }> {
  let best: { queries: number; rows: UserRow[] } | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const start = await settledDbQueries();
    const data = await gqlOk<{ users: { nodes: UserRow[] } }>(t, t.adminKey, RELATIONS_QUERY, { first, filter });
    const queries = (await settledDbQueries()) - start;
    if (!best || queries < best.queries) best = { queries, rows: data.users.nodes };
  }
  return best!;
}

async function listIds(filter: Record<string, unknown>): Promise<{ ids: string[]; totalCount: number }> {
  const data = await gqlOk<{ users: { totalCount: number; nodes: Array<{ id: string }> } }>(
    t,
    t.adminKey,
    'query($filter: UserFilter) { users(first: 500, filter: $filter) { totalCount nodes { id } } }',
    { filter },
  );
  return { ids: data.users.nodes.map((n) => n.id), totalCount: data.users.totalCount };
}

before(async () => {
  t = await startTestServer();
  const viewer = await gqlOk<{ viewer: { user: { id: string } } }>(t, t.adminKey, 'query { viewer { user { id } } }');
  adminId = viewer.viewer.user.id;
  for (const [name, id] of await builtInRoleIds(t)) roleIds.set(name, id);
  for (const [name, permissions] of [
    ['billing-reader', ['invoices:read']],
    ['deployer', ['deploy:run', 'deploy:read']],
  ] as const) {
    const data = await gqlOk<{ createRole: { id: string } }>(
      t,
      t.adminKey,
      'mutation($input: CreateRoleInput!) { createRole(input: $input) { id } }',
      { input: { name, permissions } },
    );
    roleIds.set(name, data.createRole.id);
  }
  const roles = await gqlOk<{ roles: Array<{ name: string; permissions: string[] }> }>(t, t.adminKey, 'query { roles { name permissions } }');
  for (const r of roles.roles) rolePermissions.set(r.name, r.permissions);

  // Interleaved humans and service accounts, so the first 10 rows exercise every relation too.
  // Seven entries (coprime with 3), so humans and service accounts both get every role.
  const cycle = ['member', 'verifier', 'billing-reader', 'auditor', 'deployer', 'key-manager', 'member'];
  const humans: Made[] = [];
  for (let i = 0; i < COUNT; i++) {
    const roleName = cycle[i % cycle.length]!;
    const roleId = roleIds.get(roleName)!;
    if (i % 3 === 2) {
      // Owners: the very first human for some, the latest human for others.
      const owner = i % 2 === 0 ? humans[0]! : humans[humans.length - 1]!;
      const name = i % 9 === 5 ? `svc_${i}` : `svc-${i}`;
      const data = await gqlOk<{ createServiceAccount: { id: string } }>(
        t,
        t.adminKey,
        'mutation($input: CreateServiceAccountInput!) { createServiceAccount(input: $input) { id } }',
        { input: { name, ownerId: owner.id, roleIds: [roleId] } },
      );
      made.push({ id: data.createServiceAccount.id, kind: 'SERVICE', name, email: null, ownerId: owner.id, roleName, roleId, disabled: false });
    } else {
      // Some names and some emails carry "zebra" in varying case, for the search filter.
      const name = i % 10 === 4 ? `Zebra Person ${i}` : `Person ${i}`;
      const email = i % 10 === 7 ? `ZEBRA.${i}@example.com` : `person.${i}@example.com`;
      const data = await gqlOk<{ createUser: { id: string } }>(
        t,
        t.adminKey,
        'mutation($input: CreateUserInput!) { createUser(input: $input) { id } }',
        { input: { name, email, roleIds: [roleId] } },
      );
      const user: Made = { id: data.createUser.id, kind: 'HUMAN', name, email: email.toLowerCase(), ownerId: null, roleName, roleId, disabled: false };
      made.push(user);
      humans.push(user);
    }
  }
  // A few disabled users (never an owner, so their service accounts keep a valid owner).
  const owners = new Set(made.map((u) => u.ownerId));
  for (const user of made.filter((u) => !owners.has(u.id)).filter((_, i) => i % 11 === 10)) {
    await gqlOk(t, t.adminKey, 'mutation($id: ID!) { disableUser(id: $id, reason: "test") { id } }', { id: user.id });
    user.disabled = true;
  }
});
after(() => t.close());

test('users with every relation costs a constant number of SQL statements: 100 rows like 10', async () => {
  await measure(5); // warm-up, so nothing lazy is counted once
  const small = await measure(10);
  const large = await measure(100);
  assert.equal(small.rows.length, 10);
  assert.equal(large.rows.length, 100);
  assert.equal(large.queries, small.queries, `100 rows took ${large.queries} statements, 10 rows took ${small.queries}`);
  assert.ok(large.queries <= 15, `${large.queries} statements for one page`);

  // Batching must not mix up rows: every relation matches what was created.
  const byId = new Map(made.map((u) => [u.id, u]));
  for (const row of large.rows) {
    if (row.id === adminId) {
      assert.deepEqual(row.roles.map((r) => r.name), ['admin']);
      continue;
    }
    const u = byId.get(row.id);
    assert.ok(u, `unexpected user ${row.id}`);
    assert.equal(row.owner?.id ?? null, u.ownerId, `owner of ${u.name}`);
    const accounts = made.filter((m) => m.ownerId === u.id).map((m) => m.id).sort();
    assert.deepEqual(row.serviceAccounts.map((s) => s.id).sort(), accounts, `service accounts of ${u.name}`);
    assert.deepEqual(row.roles.map((r) => r.name), [u.roleName], `roles of ${u.name}`);
    assert.deepEqual([...row.permissions].sort(), [...rolePermissions.get(u.roleName)!].sort(), `permissions of ${u.name}`);
    assert.equal(row.createdBy?.id, adminId, `createdBy of ${u.name}`);
  }
});

test('relations whose targets are off the page are batched too (service accounts: owners not on the page)', async () => {
  const filter = { kind: 'SERVICE' };
  await measure(2, filter);
  const small = await measure(3, filter);
  const large = await measure(30, filter);
  assert.equal(large.rows.length, 30);
  assert.equal(large.queries, small.queries, `30 rows took ${large.queries} statements, 3 rows took ${small.queries}`);
  assert.ok(large.queries <= 15, `${large.queries} statements for one page`);
  const byId = new Map(made.map((u) => [u.id, u]));
  for (const row of large.rows) assert.equal(row.owner?.id, byId.get(row.id)?.ownerId, 'owner');
});

test('walking users with first: 7 returns every user exactly once', async () => {
  const all = await t.db.query<{ id: string }>('SELECT id FROM users');
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  for (;;) {
    const data: {
      users: { totalCount: number; edges: Array<{ cursor: string; node: { id: string } }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
    } = await gqlOk(
      t,
      t.adminKey,
      'query($after: String) { users(first: 7, after: $after) { totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }',
      { after: cursor },
    );
    const page = data.users;
    assert.equal(page.totalCount, all.length, 'totalCount counts every user, not the page');
    assert.ok(page.edges.length <= 7);
    seen.push(...page.edges.map((e) => e.node.id));
    if (page.edges.length > 0) assert.equal(page.pageInfo.endCursor, page.edges[page.edges.length - 1]!.cursor);
    pages += 1;
    assert.ok(pages <= 100, 'pagination does not terminate');
    if (!page.pageInfo.hasNextPage) break;
    assert.equal(page.edges.length, 7, 'only the last page is short');
    cursor = page.pageInfo.endCursor;
  }
  assert.equal(new Set(seen).size, seen.length, 'no user appears twice');
  assert.deepEqual([...seen].sort(), all.map((r) => r.id).sort());
  assert.equal(all.length, COUNT + 1, 'the created users and the bootstrap admin');
});

test('a cursor not returned by the API, and first outside 0..500, are BAD_USER_INPUT', async () => {
  const data = await gqlOk<{ users: { pageInfo: { endCursor: string } } }>(t, t.adminKey, 'query { users(first: 3) { pageInfo { endCursor } } }');
  const real = data.users.pageInfo.endCursor;
  const [createdAt, id] = JSON.parse(Buffer.from(real, 'base64url').toString('utf8')) as [string, string];
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const tampered = [
    'abc',
    real.slice(0, -4),
    encode([createdAt, 'not-a-uuid']),
    encode(['not a date', id]),
    encode([createdAt, id, 'extra']),
    encode({ createdAt, id }),
    'x'.repeat(300),
  ];
  const query = 'query($first: Int, $after: String) { users(first: $first, after: $after) { nodes { id } } }';
  for (const bad of tampered) {
    const result = await postGraphQL(t.url, t.adminKey, query, { first: 5, after: bad });
    assert.deepEqual(errorCodes(result), ['BAD_USER_INPUT'], `cursor ${bad.slice(0, 40)}`);
  }
  for (const first of [501, -1]) {
    const result = await postGraphQL(t.url, t.adminKey, query, { first });
    assert.deepEqual(errorCodes(result), ['BAD_USER_INPUT'], `first: ${first}`);
  }
  // The bounds themselves are valid.
  for (const first of [0, 500]) {
    const result = await postGraphQL<{ users: { nodes: unknown[] } }>(t.url, t.adminKey, query, { first });
    assert.deepEqual(errorCodes(result), [], `first: ${first}`);
    assert.equal(result.data?.users.nodes.length, Math.min(first, COUNT + 1));
  }
});

test('filters kind, status, roleId, ownerId and search return exactly the matching users', async () => {
  const ids = (users: Made[], withAdmin = false) => [...users.map((u) => u.id), ...(withAdmin ? [adminId] : [])].sort();
  const humanOwner = made.find((u) => u.kind === 'HUMAN' && made.some((m) => m.ownerId === u.id))!;
  const cases: Array<[Record<string, unknown>, string[]]> = [
    [{ kind: 'HUMAN' }, ids(made.filter((u) => u.kind === 'HUMAN'), true)],
    [{ kind: 'SERVICE' }, ids(made.filter((u) => u.kind === 'SERVICE'))],
    [{ status: 'DISABLED' }, ids(made.filter((u) => u.disabled))],
    [{ status: 'ACTIVE' }, ids(made.filter((u) => !u.disabled), true)],
    [{ roleId: roleIds.get('billing-reader') }, ids(made.filter((u) => u.roleName === 'billing-reader'))],
    [{ roleId: roleIds.get('admin') }, [adminId]],
    [{ ownerId: humanOwner.id }, ids(made.filter((u) => u.ownerId === humanOwner.id))],
    // Case-insensitive, on name or email.
    [{ search: 'zEbRa' }, ids(made.filter((u) => /zebra/i.test(u.name) || /zebra/i.test(u.email ?? '')))],
    // LIKE wildcards are literal: '_' matches only names with an underscore.
    [{ search: '_' }, ids(made.filter((u) => u.name.includes('_')))],
    [{ search: '%' }, []],
    [{ kind: 'SERVICE', roleId: roleIds.get('deployer') }, ids(made.filter((u) => u.kind === 'SERVICE' && u.roleName === 'deployer'))],
    [{ ownerId: 'not-a-uuid' }, []],
  ];
  for (const [filter, expected] of cases) {
    assert.ok(expected.length > 0 || filter.search === '%' || filter.ownerId === 'not-a-uuid', `fixture covers ${JSON.stringify(filter)}`);
    const result = await listIds(filter);
    assert.deepEqual([...result.ids].sort(), expected, JSON.stringify(filter));
    assert.equal(result.totalCount, expected.length, `totalCount for ${JSON.stringify(filter)}`);
  }
});
