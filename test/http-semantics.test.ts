import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Writable } from 'node:stream';
import { createClient } from 'graphql-ws';
import { QueryFailedError } from 'typeorm';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import { createLogger } from '../src/server/logger';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

// What a second outside review found at the edges of HTTP, WebSocket and the audit filter.
let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());
const base = () => t.url.replace(/\/graphql$/, '');

const post = (body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${t.url}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${t.adminKey}`, ...headers },
    body: JSON.stringify(body),
  });

test('a subscription sent over HTTP POST is BAD_REQUEST pointing at the WebSocket, for any caller', async () => {
  for (const key of [t.adminKey, (await keyWithout()).secret]) {
    const response = await fetch(`${t.url}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query: 'subscription { alertRaised { id } }' }),
    });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { errors: Array<{ message: string; extensions: { code: string } }> };
    assert.deepEqual(body.errors.map((e) => e.extensions.code), ['BAD_REQUEST']);
    assert.match(body.errors[0]!.message, /WebSocket/);
  }
  assert.ok(!t.logs.some((line) => line.includes('unexpected error')), 'nothing logged as unexpected');
});

async function keyWithout(): Promise<{ secret: string }> {
  const created = await postGraphQL<{ createApiKey: { secret: string } }>(
    t.url,
    t.adminKey,
    'mutation { createApiKey(input: { name: "no permissions" }) { secret } }',
  );
  return { secret: created.data!.createApiKey.secret };
}

test('media types are case-insensitive: APPLICATION/JSON is JSON', async () => {
  const response = await post({ query: '{ __typename }' }, { 'content-type': 'APPLICATION/JSON; Charset=UTF-8' });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { data: { __typename: 'Query' } });
});

test('a refused key answers 401 with WWW-Authenticate: Bearer', async () => {
  for (const authorization of [undefined, `Bearer ${generateKey('kl')}`]) {
    const response = await fetch(`${t.url}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('www-authenticate'), 'Bearer');
  }
});

test('an unknown route is 404 NOT_FOUND', async () => {
  const response = await fetch(`${base()}/nowhere`);
  assert.equal(response.status, 404);
  const body = (await response.json()) as { errors: Array<{ extensions: { code: string } }> };
  assert.equal(body.errors[0]!.extensions.code, 'NOT_FOUND');
});

test('/audit/export refuses a parameter given twice instead of picking one', async () => {
  const response = await fetch(`${base()}/audit/export?from=2026-01-01T00:00:00Z&from=2020-01-01T00:00:00Z`, {
    headers: { authorization: `Bearer ${t.adminKey}` },
  });
  assert.equal(response.status, 400);
  const body = (await response.json()) as { errors: Array<{ extensions: { code: string; field: string } }> };
  assert.deepEqual(body.errors[0]!.extensions, { code: 'BAD_USER_INPUT', field: 'from' });
});

test('graphql-ws connectionParams name the key headers in any case', async () => {
  for (const params of [{ Authorization: `Bearer ${t.adminKey}` }, { 'X-API-Key': t.adminKey }]) {
    const client = createClient({ url: t.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: params, retryAttempts: 0, lazy: true });
    try {
      const result = await new Promise<unknown>((resolve, reject) => {
        let value: unknown;
        client.subscribe({ query: '{ viewer { key { name } } }' }, { next: (v) => (value = v), error: reject, complete: () => resolve(value) });
      });
      assert.deepEqual(result, { data: { viewer: { key: { name: 'bootstrap admin key' } } } });
    } finally {
      await client.dispose();
    }
  }
});

test('a zone id is not an address: BAD_USER_INPUT in every audit filter and in verifyKey, not a failed query', async () => {
  const filter = { ip: 'fe80::1%eth0' };
  for (const query of [
    'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }',
    'query($f: AuditEventFilter) { auditCounts(filter: $f, groupBy: ACTION) { key } }',
    'query($f: AuditEventFilter) { auditTimeline(filter: $f, bucket: HOUR) { count } }',
  ]) {
    assert.deepEqual(errorCodes(await postGraphQL(t.url, t.adminKey, query, { f: filter })), ['BAD_USER_INPUT'], query);
  }
  const verify = await postGraphQL(t.url, t.adminKey, 'query($k: String!) { verifyKey(input: { key: $k, ip: "fe80::1%eth0" }) { code } }', { k: t.adminKey });
  assert.deepEqual(errorCodes(verify), ['BAD_USER_INPUT']);
  const key = await postGraphQL(t.url, t.adminKey, 'mutation { createApiKey(input: { name: "zoned", allowedCidrs: ["fe80::1%eth0/64"] }) { secret } }');
  assert.deepEqual(errorCodes(key), ['BAD_USER_INPUT']);
  const client = createClient({ url: t.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.adminKey}` }, retryAttempts: 0, lazy: true });
  try {
    const errors = await new Promise<unknown>((resolve, reject) => {
      client.subscribe(
        { query: 'subscription($f: AuditEventFilter) { auditEventRecorded(filter: $f) { id } }', variables: { f: filter } },
        { next: (value) => resolve((value as { errors?: unknown }).errors), error: resolve, complete: () => reject(new Error('completed without an error')) },
      );
    });
    assert.deepEqual((errors as Array<{ extensions: { code: string } }>).map((e) => e.extensions.code), ['BAD_USER_INPUT']);
  } finally {
    await client.dispose();
  }
});

test('an IPv4-mapped address or network in a filter finds the IPv4 events it maps', async () => {
  // Every request here comes from 127.0.0.1, stored in its IPv4 form.
  const ids = async (ip: string) => {
    const result = await postGraphQL<{ auditEvents: { nodes: Array<{ id: string }> } }>(
      t.url,
      t.adminKey,
      'query($f: AuditEventFilter) { auditEvents(filter: $f, first: 500) { nodes { id } } }',
      { f: { ip } },
    );
    assert.equal(result.errors, undefined, JSON.stringify(result.errors));
    return result.data!.auditEvents.nodes.map((n) => n.id);
  };
  const plain = await ids('127.0.0.1');
  assert.ok(plain.length > 0 && plain.length < 400);
  // Each query adds its own audit.query event (from 127.0.0.1) once it has read.
  for (const [ip, more] of [['::ffff:127.0.0.1', 1], ['::FFFF:127.0.0.0/104', 2]] as const) {
    const mapped = await ids(ip);
    assert.equal(mapped.length, plain.length + more, ip);
    assert.ok(plain.every((id) => mapped.includes(id)), ip);
  }
});

test('a cursor holding a date the parser would roll over is not one this API wrote', async () => {
  const forged = Buffer.from(JSON.stringify(['2026-02-30T00:00:00.000Z', '00000000-0000-4000-8000-000000000000'])).toString('base64url');
  assert.deepEqual(errorCodes(await postGraphQL(t.url, t.adminKey, 'query($a: String) { users(after: $a) { totalCount } }', { a: forged })), ['BAD_USER_INPUT']);
  const page = await postGraphQL<{ users: { pageInfo: { endCursor: string } } }>(t.url, t.adminKey, '{ users(first: 1) { pageInfo { endCursor } } }');
  const again = await postGraphQL(t.url, t.adminKey, 'query($a: String) { users(after: $a) { totalCount } }', { a: page.data!.users.pageInfo.endCursor });
  assert.equal(again.errors, undefined, 'a real cursor still works');
});

test('a key-shaped User-Agent is blanked in the audit record, also where the 512-character cut would split it', async () => {
  const stored = async (name: string, userAgent: string) => {
    await post({ query: `mutation { createRole(input: { name: "${name}", permissions: [] }) { id } }` }, { 'user-agent': userAgent });
    const rows = await t.db.query<{ user_agent: string }>(`SELECT user_agent FROM audit_events WHERE action = 'role.create' AND details->'after'->>'name' = $1`, [name]);
    assert.equal(rows.length, 1);
    return rows[0]!.user_agent;
  };
  const secret = generateKey('kl');
  assert.equal(await stored('ua-role', `client/1.0 (${secret})`), 'client/1.0 ([redacted])');
  const across = await stored('ua-role-long', `${'x'.repeat(480)} ${secret}`);
  assert.equal(across, `${'x'.repeat(480)} [redacted]`);
  assert.ok(!across.includes(secret.slice(3, 20)), 'no part of the key is kept');
});

test('a logged error carries neither the failed statement\'s parameters nor anything key-shaped', () => {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }));
  const secret = generateKey('kl');
  const driverError = Object.assign(new Error(`invalid input syntax for type uuid: "${secret}"`), { code: '22P02' });
  logger.error({ err: new QueryFailedError('SELECT * FROM users WHERE id = $1', [secret, 'other-parameter'], driverError) }, 'request failed');
  assert.equal(lines.length, 1);
  assert.ok(!lines[0]!.includes(secret), lines[0]);
  assert.ok(!lines[0]!.includes('other-parameter'), 'parameters are left out');
  assert.match(lines[0]!, /SELECT \* FROM users/, 'the statement itself is kept');
  assert.match(lines[0]!, /\[redacted\]/);

  // Whatever is logged as an error, the logger neither throws nor lets a key through.
  const circular: Record<string, unknown> = { message: `line one\n${secret}` };
  circular.self = circular;
  const nested = Object.assign(new Error('outer'), { inner: { parameters: [secret] }, blob: Buffer.from(secret) });
  for (const err of [new Error(`bad value\n${secret}`), `text with ${secret}`, null, circular, nested, 42n]) {
    const logged: number = lines.length;
    assert.doesNotThrow(() => logger.error({ err }, 'request failed'));
    assert.equal(lines.length, logged + 1);
    assert.ok(!lines.at(-1)!.includes(secret), lines.at(-1));
    assert.doesNotThrow(() => JSON.parse(lines.at(-1)!));
  }
});

test('an outage failure is logged once per interval per level and message, the rest counted in one line when the interval ends; other errors every time', async () => {
  const lines: Array<Record<string, unknown>> = [];
  const interval = 200;
  const logger = createLogger('info', new Writable({ write: (chunk, _encoding, done) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), done()) }), interval);
  const refused = (n: number) => Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:5432 (${n})`), { code: 'ECONNREFUSED' });
  const seen = () => lines.map((line) => [line.level, line.msg, line.heldBack]);
  for (let i = 0; i < 50; i++) logger.error({ err: refused(i), outage: true }, 'request failed');
  logger.warn({ err: refused(50), outage: true }, 'request failed');
  logger.error({ err: refused(51), outage: true }, 'could not authenticate a WebSocket connection');
  // Not an outage (a client's socket, a forwarder's endpoint, a bug): every one is written.
  for (let i = 0; i < 3; i++) logger.error({ err: refused(i), outage: false }, 'answer could not be written');
  assert.deepEqual(seen(), [
    [50, 'request failed', undefined],
    [40, 'request failed', undefined],
    [50, 'could not authenticate a WebSocket connection', undefined],
    [50, 'answer could not be written', undefined],
    [50, 'answer could not be written', undefined],
    [50, 'answer could not be written', undefined],
  ]);

  // The interval ends: the 49 held back are written as one line, with the last of them.
  await sleep(interval * 2);
  assert.deepEqual(seen().slice(6), [[50, 'request failed', 49]]);
  assert.match(JSON.stringify(lines[6]!.err), /\(49\)/);
  // The outage is over: nothing more is owed, and a failure much later is written in full.
  await sleep(interval * 2);
  logger.error({ err: refused(99), outage: true }, 'request failed');
  assert.deepEqual(seen().slice(7), [[50, 'request failed', undefined]]);
});

test('an IPv4-mapped address in its hex form is stored as the IPv4 address, as the dotted form is', async () => {
  const created = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    t.url,
    t.adminKey,
    'mutation { createApiKey(input: { name: "hex mapped" }) { secret apiKey { id } } }',
  );
  const { secret, apiKey } = created.data!.createApiKey;
  const verified = await postGraphQL<{ verifyKey: { code: string } }>(t.url, t.adminKey, 'query($k: String!) { verifyKey(input: { key: $k, ip: "::ffff:a01:203" }) { code } }', { k: secret });
  assert.equal(verified.data!.verifyKey.code, 'VALID');
  const deadline = Date.now() + 5000;
  let lastUsedIp: string | null = null;
  while (Date.now() < deadline && lastUsedIp === null) {
    const read = await postGraphQL<{ apiKey: { lastUsedIp: string | null } }>(t.url, t.adminKey, 'query($id: ID!) { apiKey(id: $id) { lastUsedIp } }', { id: apiKey.id });
    lastUsedIp = read.data!.apiKey.lastUsedIp;
    if (lastUsedIp === null) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(lastUsedIp, '10.1.2.3');
});

test("the server's own error answers honour the client's q-values: q=0 refuses a type", async () => {
  const typeFor = async (accept: string) => {
    const response = await fetch(t.url, { method: 'POST', headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${t.adminKey}` }, body: '{' });
    assert.equal(response.status, 400);
    return response.headers.get('content-type');
  };
  assert.equal(await typeFor('application/json;q=1, application/graphql-response+json;q=0'), 'application/json; charset=utf-8');
  assert.equal(await typeFor('application/graphql-response+json;q=0.5, application/json'), 'application/json; charset=utf-8');
  assert.equal(await typeFor('application/graphql-response+json, application/json;q=0.9'), 'application/graphql-response+json; charset=utf-8');
  assert.equal(await typeFor('APPLICATION/GRAPHQL-RESPONSE+JSON'), 'application/graphql-response+json; charset=utf-8', 'types in any case');
  // Where q-values tie, the same choice as Apollo's own answers: ours must not contradict them.
  for (const accept of ['application/json, application/graphql-response+json', 'application/graphql-response+json, application/json', 'application/graphql-response+json;charset=utf-8, application/json;q=0.9']) {
    const apollo = await fetch(t.url, { method: 'POST', headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${t.adminKey}` }, body: '{"query":"{ __typename }"}' });
    assert.equal(await typeFor(accept), apollo.headers.get('content-type'), accept);
  }
});
