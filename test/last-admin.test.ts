import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { holdLock } from './helpers/database';
import { roleIds } from './helpers/fixtures';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

// Its own server: the test leaves the bootstrap administrator disabled.
let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const DISABLE = 'mutation($id: ID!) { disableUser(id: $id, reason: "race") { status } }';
const UNASSIGN = 'mutation($u: ID!, $r: ID!) { unassignRole(userId: $u, roleId: $r) { id } }';

test('two administrators removing each other at the same moment leave one of them active', async () => {
  const adminRole = (await roleIds(t)).get('admin')!;
  const bootstrapId = (await t.db.query<{ id: string }>(`SELECT owner_id AS id FROM api_keys ORDER BY created_at LIMIT 1`))[0]!.id;
  let adminKey = t.adminKey;
  const adminWithKey = async (name: string) => {
    const user = await postGraphQL<{ createUser: { id: string } }>(t.url, adminKey, 'mutation($i: CreateUserInput!) { createUser(input: $i) { id } }', {
      i: { name, email: `${name}@example.test`, roleIds: [adminRole] },
    });
    const id = user.data!.createUser.id;
    const key = await postGraphQL<{ createApiKey: { secret: string } }>(t.url, adminKey, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', {
      i: { ownerId: id, name: `${name} key`, permissions: ['*'] },
    });
    return { id, key: key.data!.createApiKey.secret };
  };
  for (const [round, [firstRemoval, secondRemoval]] of [
    [DISABLE, DISABLE],
    [UNASSIGN, DISABLE],
  ].entries()) {
    const { id: x, key: xKey } = await adminWithKey(`admin-x-${round}`);
    const { id: y, key: yKey } = await adminWithKey(`admin-y-${round}`);
    // Only x and y are active administrators now.
    const others = await t.db.query<{ id: string }>(
      `SELECT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id
        WHERE r.name = 'admin' AND u.status = 'ACTIVE' AND u.id NOT IN ($1, $2)`,
      [x, y],
    );
    for (const { id } of others) {
      const result = await postGraphQL(t.url, xKey, DISABLE, { id });
      assert.equal(result.errors, undefined, JSON.stringify(result.errors));
    }
    if (round === 0) assert.ok(others.some((o) => o.id === bootstrapId));

    // Hold audit inserts so both changes get past their checks before either commits.
    const held = await holdLock(t.db.url, 'LOCK TABLE audit_staging IN SHARE MODE');
    let outcomes: Array<Awaited<ReturnType<typeof postGraphQL>>>;
    try {
      const removals = Promise.all([
        postGraphQL(t.url, xKey, firstRemoval, firstRemoval === DISABLE ? { id: y } : { u: y, r: adminRole }),
        postGraphQL(t.url, yKey, secondRemoval, { id: x }),
      ]);
      await new Promise((resolve) => setTimeout(resolve, 400));
      await held.release();
      outcomes = await removals;
    } finally {
      await held.release();
    }
    const codes = outcomes.map((o) => errorCodes(o)[0] ?? 'OK').sort();
    assert.deepEqual(codes, ['CONFLICT', 'OK'], `round ${round}: ${JSON.stringify(outcomes.map((o) => o.errors))}`);
    const active = await t.db.query(
      `SELECT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id
        WHERE r.name = 'admin' AND u.status = 'ACTIVE' AND u.kind = 'HUMAN'`,
    );
    assert.equal(active.length, 1, `round ${round}: one active administrator is left`);
    adminKey = (active[0] as { id: string }).id === x ? xKey : yKey;
  }
});
