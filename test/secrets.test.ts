import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import {
  KtAuditEventsDocument,
  KtCreateKeyDocument,
  KtRevokeAllKeysDocument,
  KtRevokeKeyDocument,
  KtRotateKeyDocument,
  KtUpdateKeyDocument,
  KtVerifyDocument,
  KtVerifyManyDocument,
  KtViewerDocument,
  type KtAuditEventsQuery,
} from './generated/graphql';
import { roleIdByName, unique } from './helpers/fixtures';
import {
  createHuman,
  createKey,
  createServiceAccount,
  principalWithRoles,
  type KeyPrincipal,
} from './helpers/key-principals';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * Issues keys in every way there is (create, create by a member, rotate with and without grace,
 * revoke, revoke all), uses them everywhere a secret travels (verifyKey, verifyKeys, both key
 * headers, WebSocket connection_init, rejected keys, failing GraphQL documents), then looks for
 * the secrets in the whole database, the server log and the audit trail.
 */

let t: TestServer;
/** Every secret the server handed out in this file */
const secrets: string[] = [];
/** Non-secret values the scans must find: proof that the scans see the data at all */
const controls: string[] = [];
const MARKER = `scan-marker-${Date.now()}`;

function remember(created: { secret: string; key: { id: string; start: string } }) {
  secrets.push(created.secret);
  controls.push(created.key.id, created.key.start);
  return created;
}

/** Forms a leaked secret could take in a text dump of a row. */
function needles(secret: string): Array<[string, string]> {
  const body = secret.slice(secret.indexOf('_') + 1);
  return [
    ['secret', secret],
    ['secret without prefix', body],
    ['random part', body.slice(0, 43)],
    ['hex of the secret', Buffer.from(secret).toString('hex')],
    ['base64 of the secret', Buffer.from(secret).toString('base64').replace(/=+$/, '')],
  ];
}

function findLeaks(haystack: string): string[] {
  const found: string[] = [];
  for (const secret of secrets) {
    for (const [form, needle] of needles(secret)) if (haystack.includes(needle)) found.push(`${form} of ${secret.slice(0, 7)}…`);
  }
  return found;
}

/** connection_init over graphql-transport-ws; resolves with the first message type or the close code. */
function wsConnect(url: string, secret: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('WebSocket connection_init timed out'));
    }, 5000);
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${secret}` } })));
    socket.on('message', (data) => {
      clearTimeout(timer);
      resolve(String((JSON.parse(String(data)) as { type: string }).type));
      socket.close();
    });
    socket.on('close', (code) => {
      clearTimeout(timer);
      resolve(`close:${code}`);
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

let verifier: KeyPrincipal;
let member: KeyPrincipal;

before(async () => {
  // trace: the most the server ever logs
  t = await startTestServer({ logLevel: 'trace' });
  const memberRoleId = await roleIdByName(t, 'member');
  verifier = await principalWithRoles(t, ['verifier'], 'scan-verifier');
  member = await principalWithRoles(t, ['member'], 'scan-member');
  secrets.push(verifier.key, member.key);

  const ownerId = await createHuman(t, [memberRoleId], 'scan-owner');
  const svcId = await createServiceAccount(t, ownerId, [], 'scan-svc');
  const plain = remember(await createKey(t, { ownerId, name: 'plain', permissions: ['*'] }));
  const rich = remember(
    await createKey(t, {
      ownerId,
      name: 'rich',
      prefix: 'sec',
      allowedCidrs: ['127.0.0.0/8', '::1/128', '10.0.0.0/8'],
      rateLimit: { limit: 1000, windowSeconds: 60 },
      remaining: 1000,
      refill: { amount: 1000, intervalSeconds: 3600 },
      metadata: { team: 'scan' },
    }),
  );
  const own = (await t.ok(member.key, KtCreateKeyDocument, { input: { name: 'member-own', permissions: ['keys:own'] } })).createApiKey;
  remember({ secret: own.secret, key: own.apiKey });
  const toRevoke = remember(await createKey(t, { ownerId, name: 'to-revoke' }));
  const svcKey = remember(await createKey(t, { ownerId: svcId, name: 'svc' }));

  // Rotations: with grace (both keys live), without (old expired), and by a member.
  const richNext = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: rich.key.id, gracePeriodSeconds: 60 })).rotateApiKey;
  remember({ secret: richNext.secret, key: richNext.apiKey });
  const plainNext = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: plain.key.id, gracePeriodSeconds: 0 })).rotateApiKey;
  remember({ secret: plainNext.secret, key: plainNext.apiKey });
  const ownNext = (await t.ok(member.key, KtRotateKeyDocument, { id: own.apiKey.id, gracePeriodSeconds: 0 })).rotateApiKey;
  remember({ secret: ownNext.secret, key: ownNext.apiKey });
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: toRevoke.key.id, reason: 'scan' });
  await t.ok(t.adminKey, KtRevokeAllKeysDocument, { userId: svcId, reason: 'scan' });
  assert.ok(svcKey);

  // Use every secret: verification (valid and failing), the API's own authentication, WebSocket.
  for (const secret of secrets) {
    await t.ok(verifier.key, KtVerifyDocument, { input: { key: secret, ip: '127.0.0.1', resource: MARKER } });
    await t.request(secret, KtViewerDocument);
    await postGraphQL(t.url, null, '{ viewer { user { id } } }', undefined, { 'x-api-key': secret });
    await wsConnect(t.url, secret);
  }
  await t.ok(verifier.key, KtVerifyManyDocument, { inputs: secrets.map((key) => ({ key, permissions: ['invoices:read'] })) });
  // Denied (authz.denied), invalid input, and documents that fail to validate or parse, all carrying a secret.
  await t.request(member.key, KtVerifyDocument, { input: { key: plainNext.secret } });
  await t.request(verifier.key, KtVerifyDocument, { input: { key: plainNext.secret, ip: 'not-an-ip' } });
  await postGraphQL(t.url, verifier.key, `{ verifyKey(input: { key: "${richNext.secret}" }) { code nope } }`);
  await postGraphQL(t.url, verifier.key, `{ verifyKey(input: { key: "${richNext.secret}" }) { code `);
  await postGraphQL(t.url, verifier.key, 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } }', {
    input: { key: ownNext.secret, bogus: 1 },
  });
  // Secrets pasted into names and descriptions, and alerts that quote those names.
  const pasted = plainNext.secret;
  const named = remember(await createKey(t, { ownerId, name: `copy of ${pasted}` }));
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: named.key.id, reason: 'pasted' });
  await t.request(named.secret, KtViewerDocument); // REVOKED_KEY_USED, quoting the key's name
  const admin = (query: string, variables: Record<string, unknown>) => postGraphQL(t.url, t.adminKey, query, variables);
  await admin('mutation($i: CreateUserInput!) { createUser(input: $i) { id } }', { i: { name: `user ${pasted}`, email: `${unique('pasted')}@example.test` } });
  await admin('mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', { i: { name: unique('pasted'), description: `see ${pasted}`, permissions: [] } });
  await admin('mutation($i: CreateAlertRuleInput!) { createAlertRule(input: $i) { id } }', {
    i: { name: `rule ${pasted}`, metric: 'AUTH_FAILURES', threshold: 1, windowSeconds: 60, severity: 'LOW' },
  });
  await t.request(generateKey('kl'), KtViewerDocument); // THRESHOLD, quoting the rule's name
  await t.server.services.alerting.sink.idle();
  await t.server.services.usage.flush();
});
after(() => t?.close());

test('the exercise produced what the scans look through', async () => {
  assert.ok(secrets.length >= 10, `${secrets.length} secrets issued`);
  assert.equal(new Set(secrets).size, secrets.length, 'every secret is distinct');
  const events = await allAuditEvents();
  const actions = new Set(events.map((e) => e.action));
  for (const action of ['key.create', 'key.rotate', 'key.revoke', 'key.revoke_all', 'auth.failure', 'authz.denied']) {
    assert.ok(actions.has(action), `the audit trail has ${action}`);
  }
});

test('no table of the database holds a created secret in clear', async () => {
  const tables = await t.db.query<{ table_name: string }>(
    `SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name`,
  );
  const names = tables.map((r) => r.table_name);
  for (const expected of ['api_keys', 'audit_events', 'usage_events', 'users']) assert.ok(names.includes(expected), `${expected} scanned`);

  let everything = '';
  const leaks: string[] = [];
  for (const name of names) {
    // Every column of every row, as text.
    const rows = await t.db.query<{ j: string }>(`SELECT row_to_json(x)::text AS j FROM public."${name.replace(/"/g, '""')}" x`);
    const text = rows.map((r) => r.j).join('\n');
    everything += text;
    for (const leak of findLeaks(text)) leaks.push(`${name}: ${leak}`);
  }
  assert.deepEqual(leaks, [], 'secrets found in the database');

  // The scan does see the data: ids, starts and the recorded usage resource are there.
  for (const control of controls) assert.ok(everything.includes(control), `scan finds ${control}`);
  assert.ok(everything.includes(MARKER), 'scan finds the usage rows');
});

test('no server log line holds a created secret', () => {
  assert.ok(t.logs.length > 0, 'the server logged something');
  assert.ok(t.logs.some((line) => line.includes('listening')), 'the log is the server log');
  const leaks = t.logs.flatMap((line, i) => findLeaks(line).map((leak) => `line ${i}: ${leak}`));
  assert.deepEqual(leaks, [], 'secrets found in the server log');
});

type AuditNode = KtAuditEventsQuery['auditEvents']['nodes'][number];

async function allAuditEvents(): Promise<AuditNode[]> {
  const out: AuditNode[] = [];
  let after: string | null = null;
  for (let page = 0; page < 100; page++) {
    const data: KtAuditEventsQuery = await t.ok(t.adminKey, KtAuditEventsDocument, { first: 500, after });
    out.push(...data.auditEvents.nodes);
    if (!data.auditEvents.pageInfo.hasNextPage) return out;
    after = data.auditEvents.pageInfo.endCursor;
  }
  assert.fail('too many audit pages');
}

test("audit events' details never hold a secret, even one a caller writes into a field", async () => {
  const events = await allAuditEvents();
  assert.ok(events.length > 0);
  const leaks = events.flatMap((e) => findLeaks(JSON.stringify(e)).map((leak) => `${e.action} #${e.id}: ${leak}`));
  assert.deepEqual(leaks, [], 'secrets found in audit events');

  // A key-shaped string written into a key's name is blanked in the event's details.
  const ownerId = await createHuman(t, [await roleIdByName(t, 'member')], 'scan-rename');
  const { key } = await createKey(t, { ownerId, name: 'renamed' });
  const pasted = generateKey('kl');
  await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { name: `${unique('oops')} ${pasted}` } });
  const update = (await allAuditEvents()).filter((e) => e.action === 'key.update' && e.targetId === key.id);
  assert.equal(update.length, 1);
  const details = JSON.stringify(update[0]!.details);
  assert.ok(details.includes('oops-'), `the rest of the name is kept: ${details}`);
  assert.ok(!details.includes(pasted), `a key-shaped string reached the audit details: ${details}`);
  assert.ok(!details.includes(pasted.slice(3)), 'nor its random part');
});

test('/metrics shows no secret', async () => {
  const response = await fetch(`${t.baseUrl}/metrics`);
  assert.equal(response.status, 200);
  const text = await response.text();
  assert.ok(text.length > 0);
  assert.deepEqual(findLeaks(text), []);
});

test('error responses do not echo a secret back (the contract: no secrets in responses)', async () => {
  const secret = secrets[secrets.length - 1]!;
  // Variable coercion fails on an unknown field of an input that also carries the key.
  const coercion = await postGraphQL<unknown>(t.url, verifier.key, 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } }', {
    input: { key: secret, bogus: 1 },
  });
  assert.equal(coercion.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
  // Validation fails on a document with the key inline.
  const validation = await postGraphQL<unknown>(t.url, verifier.key, `{ verifyKey(input: { key: "${secret}", ip: 5 }) { code } }`);
  assert.ok(validation.errors?.length);
  const leaks = [coercion, validation].flatMap((r) => findLeaks(JSON.stringify(r.errors)));
  assert.deepEqual(leaks, [], `an error message repeats the key: ${JSON.stringify(coercion.errors)}`);
});
