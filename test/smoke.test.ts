import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ViewerDocument, RolesDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

test('the bootstrap admin key authenticates as admin with *', async () => {
  const data = await t.ok(t.adminKey, ViewerDocument);
  assert.equal(data.viewer.user.name, 'admin');
  assert.deepEqual(data.viewer.permissions, ['*']);
  const roles = await t.ok(t.adminKey, RolesDocument);
  assert.deepEqual(roles.roles.map((r) => r.name).sort(), ['admin', 'auditor', 'key-manager', 'member', 'verifier']);
});
