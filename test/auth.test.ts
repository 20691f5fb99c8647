import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { generateKey } from '../src/auth/key-format';
import {
  AuditEventsDocument,
  CreateApiKeyDocument,
  CreateServiceAccountDocument,
  DisableUserDocument,
  EnableUserDocument,
  RolesDocument,
  UnassignRoleDocument,
  UsersDocument,
  ViewerDocument,
} from './generated/graphql';
import { roleIdByName } from './helpers/fixtures';
import {
  assertNoLeak,
  auditEvents,
  createPrincipal,
  eventsOfRequest,
  expectError,
  principalWithBuiltIn,
  type AuditNode,
} from './helpers/principals';
import { startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

/** A copy of `key` with one character of its random part replaced: the checksum no longer matches. */
function withOneCharChanged(key: string): string {
  const index = key.indexOf('_') + 10;
  const replacement = key[index] === 'A' ? 'B' : 'A';
  return key.slice(0, index) + replacement + key.slice(index + 1);
}

/** Rejected at the door: HTTP 401, UNAUTHENTICATED, no data, nothing leaked. */
function expectUnauthenticated(response: GraphQLResponse<unknown>): void {
  assert.equal(response.status, 401, `HTTP status: ${JSON.stringify(response.errors)}`);
  expectError(response, 'UNAUTHENTICATED');
}

/** The auth.failure event one rejected request wrote; it must not contain the presented key anywhere. */
async function authFailureOf(response: GraphQLResponse<unknown>, presented: string): Promise<AuditNode> {
  const events = await eventsOfRequest(t, response, ['auth.failure']);
  assert.equal(events.length, 1, `one auth.failure event for the request: ${JSON.stringify(events)}`);
  const event = events[0]!;
  assert.equal(event.outcome, 'DENIED');
  assert.equal(event.actorType, 'ANONYMOUS');
  assert.equal(event.actor, null, 'a rejected key identifies nobody');
  assert.equal(event.ip, '127.0.0.1');
  // The secret (or its near-copy) must never be stored: not in details, not anywhere in the event,
  // not even a long piece of it (only a key's short display `start` is public).
  assert.ok(!JSON.stringify(event.details).includes(presented), 'details do not contain the presented key');
  const fragment = secretFragmentIn(JSON.stringify(event), presented);
  assert.equal(fragment, null, `the event contains part of the presented key: ${fragment}`);
  return event;
}

/** The first run of 12 characters of the key's secret part (after the prefix) found in `text`, or null. */
function secretFragmentIn(text: string, key: string): string | null {
  const secretPart = key.slice(key.indexOf('_') + 1);
  for (let i = 0; i + 12 <= secretPart.length; i++) {
    const piece = secretPart.slice(i, i + 12);
    if (text.includes(piece)) return piece;
  }
  return null;
}

test('a request without any key is 401 UNAUTHENTICATED and writes no auth.failure event', async () => {
  const earlier = await auditEvents(t, { actions: ['auth.failure'] });
  const response = await t.request(null, ViewerDocument);
  expectUnauthenticated(response);
  // auth.failure is for a key that was presented and rejected; nothing was presented here.
  const afterwards = await auditEvents(t, { actions: ['auth.failure'] });
  assert.equal(afterwards.length, earlier.length);
});

test('a key with one character changed is 401 UNAUTHENTICATED and audited as MALFORMED without the key', async () => {
  const tampered = withOneCharChanged(t.adminKey);
  assert.notEqual(tampered, t.adminKey);
  const response = await t.request(tampered, ViewerDocument);
  expectUnauthenticated(response);
  assert.ok(!JSON.stringify(response.errors).includes(tampered), 'the response does not echo the key');
  const event = await authFailureOf(response, tampered);
  assert.equal(event.details?.code, 'MALFORMED');
  // A malformed key cannot name any stored key.
  assert.equal(event.targetId, null);
});

test('a well-formed key that was never issued is 401 UNAUTHENTICATED and audited as NOT_FOUND without the key', async () => {
  const stranger = generateKey('kl');
  const response = await t.request(stranger, ViewerDocument);
  expectUnauthenticated(response);
  const event = await authFailureOf(response, stranger);
  assert.equal(event.details?.code, 'NOT_FOUND');
  assert.ok(!t.logs.some((line) => line.includes(stranger)), 'no log line contains the presented key');
});

test('X-API-Key authenticates exactly like Authorization: Bearer', async () => {
  const viaBearer = await t.request(t.adminKey, ViewerDocument);
  const viaHeader = await t.request(null, ViewerDocument, undefined, { 'x-api-key': t.adminKey });
  assert.equal(viaHeader.status, 200, JSON.stringify(viaHeader.errors));
  assert.equal(viaHeader.errors, undefined);
  assert.equal(viaHeader.data?.viewer.user.name, 'admin');
  assert.deepEqual(viaHeader.data?.viewer.key.id, viaBearer.data?.viewer.key.id);
  assert.deepEqual(viaHeader.data?.viewer.permissions, ['*']);

  // The header is verified, not merely accepted: a bad key in it is rejected and audited too.
  const bad = withOneCharChanged(t.adminKey);
  const rejected = await t.request(null, ViewerDocument, undefined, { 'x-api-key': bad });
  expectUnauthenticated(rejected);
  await authFailureOf(rejected, bad);
});

test('Authorization carries a key only with the Bearer scheme; another scheme leaves X-API-Key to speak', async () => {
  expectUnauthenticated(await t.request(null, ViewerDocument, undefined, { authorization: t.adminKey }));
  expectUnauthenticated(await t.request(null, ViewerDocument, undefined, { authorization: `Token ${t.adminKey}` }));
  const lowercase = await t.request(null, ViewerDocument, undefined, { authorization: `bearer ${t.adminKey}` });
  assert.equal(lowercase.data?.viewer.user.name, 'admin');
  // A proxy's own Basic credentials do not hide the key in X-API-Key.
  const behindProxy = await t.request(null, ViewerDocument, undefined, { authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': t.adminKey });
  assert.equal(behindProxy.data?.viewer.user.name, 'admin', JSON.stringify(behindProxy.errors));
});

/** POST { viewer } with each [name, value] header sent as its own header line, repeats included. */
function postWithHeaderLines(lines: Array<[string, string]>): Promise<{ status: number; body: Omit<GraphQLResponse<unknown>, "status" | "headers"> }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ query: '{ viewer { user { name } } }' });
    const req = httpRequest(`${t.url}`, { method: 'POST' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Omit<GraphQLResponse<unknown>, "status" | "headers"> }));
    });
    req.on('error', reject);
    req.setHeader('content-type', 'application/json');
    const byName = new Map<string, string[]>();
    for (const [name, value] of lines) byName.set(name, [...(byName.get(name) ?? []), value]);
    for (const [name, values] of byName) req.setHeader(name, values);
    req.end(body);
  });
}

/** connection_init with `payload`; resolves with the first message's type or the close code. */
function wsInit(payload: Record<string, string>, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(t.url.replace(/^http/, 'ws'), 'graphql-transport-ws', { headers });
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload })));
    socket.on('message', (data) => {
      resolve(String((JSON.parse(String(data)) as { type: string }).type));
      socket.close();
    });
    socket.on('close', (code) => resolve(`close:${code}`));
    socket.on('error', reject);
  });
}

test('two different keys in one request are refused and audited: neither is used, whichever a proxy checked', async () => {
  const member = await principalWithBuiltIn(t, 'member');
  const before = await auditEvents(t, { actions: ['auth.failure'] });
  const both = await t.request(member.key, ViewerDocument, undefined, { 'x-api-key': t.adminKey });
  expectUnauthenticated(both);
  assert.match(both.errors![0]!.message, /different keys/);
  const serialized = JSON.stringify(both);
  assert.ok(!serialized.includes(member.key) && !serialized.includes(t.adminKey), 'the answer names neither key');
  const events = await eventsOfRequest(t, both, ['auth.failure']);
  assert.equal(events.length, 1);
  assert.equal(events[0]!.details?.code, 'CONFLICTING_KEYS');
  assert.equal(events[0]!.targetId, null, 'neither key is named');
  assert.equal(secretFragmentIn(JSON.stringify(events[0]), member.key) ?? secretFragmentIn(JSON.stringify(events[0]), t.adminKey), null);

  // Node keeps only the first of two Authorization headers; a proxy may have checked the second.
  const repeated = await postWithHeaderLines([['authorization', `Bearer ${member.key}`], ['authorization', `Bearer ${t.adminKey}`]]);
  assert.equal(repeated.status, 401);
  assert.equal(repeated.body.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
  assert.equal(repeated.body.data, undefined);
  const afterwards = await auditEvents(t, { actions: ['auth.failure'] });
  assert.equal(afterwards.length, before.length + 2, 'both refusals are audited');

  // The same key twice names one key.
  const same = await postWithHeaderLines([['authorization', `Bearer ${member.key}`], ['x-api-key', member.key], ['authorization', `Bearer ${member.key}`]]);
  assert.equal(same.status, 200, JSON.stringify(same.body.errors));

  // connection_init: the same rule, by header name in any case.
  assert.equal(await wsInit({ authorization: `Bearer ${member.key}`, 'X-API-Key': t.adminKey }), 'close:4403');
  assert.equal(await wsInit({ authorization: `Bearer ${member.key}`, Authorization: `Bearer ${t.adminKey}` }), 'close:4403');
  assert.equal(await wsInit({ authorization: `Bearer ${member.key}`, 'x-api-key': member.key }), 'connection_ack');
  // …and the upgrade request's own headers count too.
  assert.equal(await wsInit({ authorization: `Bearer ${member.key}` }, { authorization: `Bearer ${t.adminKey}` }), 'close:4403');
  assert.equal(await wsInit({ authorization: `Bearer ${member.key}` }, { 'x-api-key': member.key }), 'connection_ack');

  // All of a Bearer credential is its key: trailing words make it malformed, not absent.
  expectUnauthenticated(await t.request(null, ViewerDocument, undefined, { authorization: `Bearer ${member.key} junk`, 'x-api-key': t.adminKey }));
  const trailing = await t.request(null, ViewerDocument, undefined, { authorization: `Bearer ${t.adminKey} junk` });
  expectUnauthenticated(trailing);
  assert.equal((await eventsOfRequest(t, trailing, ['auth.failure']))[0]?.details?.code, 'MALFORMED');
});

test("a disabled owner's key is rejected as UNAUTHENTICATED until the owner is enabled again", async () => {
  const person = await principalWithBuiltIn(t, 'member');
  assert.equal((await t.ok(person.key, ViewerDocument)).viewer.user.id, person.userId);

  await t.ok(t.adminKey, DisableUserDocument, { id: person.userId, reason: 'left the company' });
  const response = await t.request(person.key, ViewerDocument);
  expectUnauthenticated(response);
  const event = await authFailureOf(response, person.key);
  assert.equal(event.details?.code, 'OWNER_DISABLED');
  // The key exists, so the event names it (by id, never by secret).
  assert.equal(event.targetId, person.keyId);

  await t.ok(t.adminKey, EnableUserDocument, { id: person.userId });
  assert.equal((await t.ok(person.key, ViewerDocument)).viewer.user.id, person.userId);
});

test("a service account's key is rejected when its human owner is disabled", async () => {
  const human = await principalWithBuiltIn(t, 'member');
  const memberRoleId = await roleIdByName(t, 'member');
  const sa = await t.ok(t.adminKey, CreateServiceAccountDocument, {
    input: { name: 'ci-pipeline', ownerId: human.userId, roleIds: [memberRoleId] },
  });
  const saKey = await t.ok(t.adminKey, CreateApiKeyDocument, {
    input: { ownerId: sa.createServiceAccount.id, name: 'ci', permissions: ['*'] },
  });
  const secret = saKey.createApiKey.secret;
  assert.equal((await t.ok(secret, ViewerDocument)).viewer.user.kind, 'SERVICE');

  // Only the human is disabled; the service account itself stays ACTIVE.
  await t.ok(t.adminKey, DisableUserDocument, { id: human.userId, reason: 'on leave' });
  const response = await t.request(secret, ViewerDocument);
  expectUnauthenticated(response);
  const event = await authFailureOf(response, secret);
  assert.equal(event.details?.code, 'OWNER_DISABLED');
  assert.equal(event.targetId, saKey.createApiKey.apiKey.id);
});

test("a key's effective permissions shrink the moment its owner loses a role", async () => {
  const auditorRoleId = await roleIdByName(t, 'auditor');
  const memberRoleId = await roleIdByName(t, 'member');
  const person = await createPrincipal(t, { roleIds: [auditorRoleId, memberRoleId], label: 'shrinking' });

  const beforeLoss = await t.ok(person.key, ViewerDocument);
  assert.ok(beforeLoss.viewer.permissions.includes('users:read'));
  assert.ok(beforeLoss.viewer.permissions.includes('keys:own'));
  await t.ok(person.key, UsersDocument, { first: 1 });

  await t.ok(t.adminKey, UnassignRoleDocument, { userId: person.userId, roleId: auditorRoleId });

  // The very next request sees the smaller set: the key's '*' means "what the owner holds now".
  const afterLoss = await t.ok(person.key, ViewerDocument);
  assert.deepEqual(afterLoss.viewer.permissions, ['keys:own']);
  expectError(await t.request(person.key, UsersDocument, { first: 1 }), 'FORBIDDEN');
});

test('a key with no roles and no permissions can query viewer and nothing more', async () => {
  // The owner could read users; the key was granted nothing, so it may not.
  const person = await createPrincipal(t, { roleIds: [await roleIdByName(t, 'auditor')], keyPermissions: [], label: 'bare' });
  const viewer = await t.ok(person.key, ViewerDocument);
  assert.equal(viewer.viewer.user.id, person.userId);
  assert.deepEqual(viewer.viewer.permissions, []);
  const users = await t.request(person.key, UsersDocument, { first: 1 });
  assert.equal(users.status, 200, 'authenticated: a FORBIDDEN field is not a 401');
  expectError(users, 'FORBIDDEN');
  expectError(await t.request(person.key, RolesDocument), 'FORBIDDEN');
});

test('/healthz and /readyz answer 200 without a key', async () => {
  const health = await fetch(`${t.baseUrl}/healthz`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
  const ready = await fetch(`${t.baseUrl}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal(((await ready.json()) as { status: string }).status, 'ready');
});

test('GET /graphql?query= works with Authorization and is 401 without it', async () => {
  const url = `${t.url}?query=${encodeURIComponent('{viewer{user{name}}}')}`;
  const response = await fetch(url, { headers: { authorization: `Bearer ${t.adminKey}` } });
  const body = (await response.json()) as { data?: { viewer: { user: { name: string } } }; errors?: unknown };
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.equal(body.errors, undefined);
  assert.equal(body.data?.viewer.user.name, 'admin');

  const anonymous = await fetch(url);
  const anonymousBody = (await anonymous.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
  assert.equal(anonymous.status, 401);
  assert.equal(anonymousBody.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
});

test('first outside 0..500 is BAD_USER_INPUT, with no stack trace or SQL in the error', async () => {
  expectError(await t.request(t.adminKey, UsersDocument, { first: 501 }), 'BAD_USER_INPUT');
  expectError(await t.request(t.adminKey, UsersDocument, { first: -1 }), 'BAD_USER_INPUT');
  expectError(await t.request(t.adminKey, AuditEventsDocument, { first: 501 }), 'BAD_USER_INPUT');
  // The boundary itself is allowed.
  const page = await t.ok(t.adminKey, UsersDocument, { first: 500 });
  assert.ok(page.users.totalCount >= 1);
});

test('an impossible date in AuditEventFilter.from is BAD_USER_INPUT, with no stack trace or SQL', async () => {
  const response = await t.request(t.adminKey, AuditEventsDocument, { filter: { from: '2020-02-30T00:00:00Z' } });
  expectError(response, 'BAD_USER_INPUT');
  const garbage = await t.request(t.adminKey, AuditEventsDocument, { filter: { from: 'yesterday' } });
  expectError(garbage, 'BAD_USER_INPUT');
  // A real leap day is a valid date: the rejection above is about the calendar, not the format.
  await t.ok(t.adminKey, AuditEventsDocument, { filter: { from: '2020-02-29T00:00:00Z' }, first: 1 });
});

test('no error response carries a stack trace, SQL or the presented key', async () => {
  const stranger = generateKey('kl');
  const responses: Array<GraphQLResponse<unknown>> = [
    await t.request(null, ViewerDocument),
    await t.request(stranger, ViewerDocument),
    await t.request(t.adminKey, UsersDocument, { first: 501 }),
    await t.request(t.adminKey, UsersDocument, { after: 'not-a-cursor' }),
    await t.request(t.adminKey, AuditEventsDocument, { filter: { ip: 'not-an-ip' } }),
  ];
  for (const response of responses) {
    assert.ok(response.errors && response.errors.length > 0);
    assertNoLeak(response);
    assert.ok(!JSON.stringify(response.errors).includes(stranger));
    for (const error of response.errors) assert.equal(error.extensions?.stacktrace, undefined);
  }
});
