import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isWellFormedKey } from '../src/auth/key-format';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

const PEPPER = randomBytes(32).toString('base64url');
let t: TestServer;
before(async () => {
  t = await startTestServer({ keyPepper: PEPPER });
});
after(() => t.close());

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(__dirname, '..', '..', 'bin', 'keyledger.js'), 'recover-admin', ...args], {
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: t.db.url, KEY_PEPPER: PEPPER, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += String(c)));
    child.stderr.on('data', (c) => (stderr += String(c)));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const gql = <T>(key: string, query: string, variables: Record<string, unknown> = {}) => postGraphQL<T>(t.url, key, query, variables);

test('recover-admin: with every administrator key revoked, the operator issues a new one, audited', async () => {
  const viewer = await gql<{ viewer: { user: { id: string } } }>(t.adminKey, '{ viewer { user { id } } }');
  const adminId = viewer.data!.viewer.user.id;
  await gql(t.adminKey, 'mutation($u: ID!) { revokeAllApiKeys(userId: $u, reason: "drill: keys lost") }', { u: adminId });
  assert.deepEqual(errorCodes(await gql(t.adminKey, '{ viewer { user { id } } }')), ['UNAUTHENTICATED'], 'locked out');

  const result = await cli(['--user', 'admin', '--reason', 'all admin keys revoked']);
  assert.equal(result.code, 0, result.stderr);
  const key = result.stdout.trim();
  assert.ok(isWellFormedKey(key), 'one well-formed key on stdout');
  const recovered = await gql<{ viewer: { user: { id: string }; permissions: string[] } }>(key, '{ viewer { user { id } permissions } }');
  assert.equal(recovered.data!.viewer.user.id, adminId);
  assert.deepEqual(recovered.data!.viewer.permissions, ['*']);

  const [event] = await t.db.query<{ actor_type: string; details: { after?: { name?: string } } | null; details_text: string }>(
    `SELECT actor_type, details, details::text AS details_text FROM audit_events WHERE action = 'key.create' ORDER BY id DESC LIMIT 1`,
  );
  assert.equal(event!.actor_type, 'SYSTEM');
  assert.match(event!.details_text, /recovery: all admin keys revoked/);
  assert.ok(!event!.details_text.includes(key), 'the secret is not in the audit log');
  assert.ok(t.logs.every((line) => !line.includes(key)));
});

test('recover-admin refuses anyone but an active human administrator, a missing reason, and the wrong pepper', async () => {
  const member = await gql<{ createUser: { id: string } }>(await freshAdminKey(), 'mutation { createUser(input: { name: "plain", email: "plain@example.com" }) { id } }');
  assert.ok(member.data?.createUser.id, JSON.stringify(member.errors));
  for (const user of ['plain', 'nobody']) {
    const refused = await cli(['--user', user, '--reason', 'try']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no active human administrator/);
    assert.equal(refused.stdout, '');
  }
  const noReason = await cli(['--user', 'admin']);
  assert.notEqual(noReason.code, 0);
  assert.match(noReason.stderr, /--reason/);
  const wrongPepper = await cli(['--user', 'admin', '--reason', 'x'], { KEY_PEPPER: randomBytes(32).toString('base64url') });
  assert.notEqual(wrongPepper.code, 0);
  assert.match(wrongPepper.stderr, /KEY_PEPPER/);
  assert.equal(wrongPepper.stdout, '');
});

/** The first test revoked the bootstrap key: a new admin key for this one, the same way. */
async function freshAdminKey(): Promise<string> {
  const result = await cli(['--user', 'admin', '--reason', 'second test']);
  return result.stdout.trim();
}
