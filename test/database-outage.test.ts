import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import { generateKey } from '../src/auth/key-format';
import { sleep } from './helpers/cluster';
import { adminUrl } from './helpers/database';
import { startTestServer, type TestServer } from './helpers/server';

/**
 * The database going away under a running server: requests that need it are answered 503 with
 * Retry-After (the server's trouble, and passing), never a 500 or the driver's text, and the
 * server recovers by itself once the database is back.
 */

let t: TestServer;
/** On the server's maintenance database: a database cannot refuse connections to itself. */
let admin: Client;
before(async () => {
  t = await startTestServer();
  admin = new Client({ connectionString: adminUrl() });
  await admin.connect();
});
after(async () => {
  await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS true`).catch(() => {});
  await admin.end();
  await t.close();
});

const post = (key: string) =>
  fetch(`${t.baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query: '{ viewer { permissions } }' }),
  });

test('with the database refusing connections, a request that must check its key is 503 with Retry-After; it recovers after', async () => {
  await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS false`);
  // Every connection of the server's (its pool, its listener); the test's own stays.
  await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
  // A key the server has never seen: checking it needs the database.
  const answer = await post(generateKey('kl'));
  const text = await answer.text();
  assert.equal(answer.status, 503, text);
  assert.equal(answer.headers.get('retry-after'), '5');
  const body = JSON.parse(text) as { errors: Array<{ message: string; extensions: { code: string } }> };
  assert.equal(body.errors[0]!.extensions.code, 'INTERNAL_SERVER_ERROR');
  assert.doesNotMatch(text, /accepting connections|terminat|kl_test_|at .*\.js/, 'neither the driver\'s text nor a stack');

  await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS true`);
  let status = 0;
  for (let attempt = 0; attempt < 100 && status !== 401; attempt++) {
    status = (await post(generateKey('kl'))).status;
    if (status !== 401) await sleep(100);
  }
  assert.equal(status, 401, 'an unknown key is refused as usual once the database is back');
});
