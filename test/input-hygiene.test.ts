import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { errorCodes, postGraphQL, startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const NUL = 'a\u0000b';
const LONE_SURROGATE = 'x\ud800y';

function send<T = unknown>(query: string, variables: Record<string, unknown> = {}): Promise<GraphQLResponse<T>> {
  return postGraphQL<T>(t.url, t.adminKey, query, variables);
}

function assertRefused(response: GraphQLResponse<unknown>, code: string, label: string): void {
  assert.deepEqual(errorCodes(response), [code], `${label}: ${JSON.stringify(response.errors)}`);
  assert.ok(!response.data || Object.values(response.data).every((v) => v === null), `${label}: no data`);
  for (const error of response.errors ?? []) {
    assert.doesNotMatch(error.message, /postgres|invalid byte|syntax|stack|Maximum call|0x00|jsonb/i, `${label}: ${error.message}`);
    assert.equal(error.extensions?.http, undefined);
  }
}

describe('text PostgreSQL cannot store is BAD_USER_INPUT, in any field', () => {
  test('NUL in search and filter strings', async () => {
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['users search', 'query($s: String) { users(filter: { search: $s }) { totalCount } }', { s: NUL }],
      ['apiKeys search', 'query($s: String) { apiKeys(filter: { search: $s }) { totalCount } }', { s: NUL }],
      ['audit targetType', 'query($s: String) { auditEvents(filter: { targetType: $s }) { nodes { id } } }', { s: NUL }],
      ['audit targetId', 'query($s: String) { auditEvents(filter: { targetId: $s }) { nodes { id } } }', { s: NUL }],
      ['a literal in the query', 'query { users(filter: { search: "a\\u0000b" }) { totalCount } }', {}],
    ];
    for (const [label, query, variables] of cases) assertRefused(await send(query, variables), 'BAD_USER_INPUT', label);
  });

  test('half a surrogate pair, in a name, a JSON value or a JSON key; nothing is created', async () => {
    const { data } = await send<{ viewer: { user: { id: string } } }>('{ viewer { user { id } } }');
    const ownerId = data!.viewer.user.id;
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['key name', 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', { i: { ownerId, name: LONE_SURROGATE, permissions: [] } }],
      ['user name', 'mutation($i: CreateUserInput!) { createUser(input: $i) { id } }', { i: { name: `u${LONE_SURROGATE}`, email: 'surrogate@example.com' } }],
      ['detailsContains value', 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: { a: '\ud800' } } }],
      ['detailsContains key', 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: { ['\udc00']: 1 } } }],
    ];
    for (const [label, query, variables] of cases) assertRefused(await send(query, variables), 'BAD_USER_INPUT', label);
    const users = await t.db.query(`SELECT id FROM users WHERE email = 'surrogate@example.com'`);
    assert.equal(users.length, 0);
    // A whole pair is fine: it is one character.
    const emoji = await send('mutation($i: CreateUserInput!) { createUser(input: $i) { name } }', { i: { name: 'pair \ud83d\ude00', email: 'pair@example.com' } });
    assert.equal((emoji.data as { createUser: { name: string } }).createUser.name, 'pair \u{1f600}');
  });

  test('JSON nested thousands of levels deep is refused, not a stack overflow', async () => {
    let deep: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 3000; i++) deep = { a: deep };
    assertRefused(await send('query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: deep } }), 'BAD_USER_INPUT', 'deep variables');
    const literal = `${'{ a: '.repeat(40)}1${' }'.repeat(40)}`;
    assertRefused(await send(`query { auditEvents(filter: { detailsContains: ${literal} }) { nodes { id } } }`), 'BAD_USER_INPUT', 'deep literal');
    // Ordinary nesting still works.
    const shallow = await send('query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: { a: { b: { c: 1 } } } } });
    assert.equal(shallow.errors, undefined);
  });

  test('a key a verification checks is a result even with NUL or half a pair (MALFORMED); what is stored with it is still refused', async () => {
    type Verified = { verifyKey: { valid: boolean; code: string } };
    const query = 'query($k: String!, $r: String) { verifyKey(input: { key: $k, resource: $r }) { valid code } }';
    for (const key of [`kl_${NUL}`, `kl_${LONE_SURROGATE}`]) {
      const answer = await send<Verified>(query, { k: key });
      assert.deepEqual(answer.data?.verifyKey, { valid: false, code: 'MALFORMED' }, JSON.stringify(answer.errors));
    }
    const literal = await send<Verified>('{ verifyKey(input: { key: "kl_\\u0000x" }) { valid code } }');
    assert.deepEqual(literal.data?.verifyKey, { valid: false, code: 'MALFORMED' }, JSON.stringify(literal.errors));
    const whole = await send<Verified>('query($i: VerifyKeyInput!) { verifyKey(input: $i) { valid code } }', { i: { key: `kl_${NUL}` } });
    assert.deepEqual(whole.data?.verifyKey, { valid: false, code: 'MALFORMED' }, JSON.stringify(whole.errors));
    const many = await send<{ verifyKeys: Array<{ code: string }> }>('query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) { code } }', {
      i: [{ key: `kl_${NUL}` }, { key: 'kl_x' }],
    });
    assert.deepEqual(many.data?.verifyKeys.map((r) => r.code), ['MALFORMED', 'MALFORMED'], JSON.stringify(many.errors));

    assertRefused(await send(query, { k: 'kl_x', r: LONE_SURROGATE }), 'BAD_USER_INPUT', 'half a pair in the resource');
    assertRefused(await send('query($i: VerifyKeyInput!) { verifyKey(input: $i) { code } }', { i: { key: 'kl_x', resource: NUL } }), 'BAD_USER_INPUT', 'NUL in the resource beside the key');
    // One variable as the key and as the resource: the resource is stored, so it is refused.
    assertRefused(await send('query($k: String!) { verifyKey(input: { key: $k, resource: $k }) { code } }', { k: `kl_${NUL}` }), 'BAD_USER_INPUT', 'key and resource');
    const fine = await send<{ verifyKey: { code: string } }>(query, { k: 'kl_x', r: 'GET /invoices' });
    assert.equal(fine.data!.verifyKey.code, 'MALFORMED');
  });

  test('something deeply nested where a key belongs is refused as BAD_USER_INPUT, not an internal error', async () => {
    // Written by hand: JSON.stringify itself gives up at this depth, as the server's once did.
    const deep = `${'['.repeat(5000)}"kl_x"${']'.repeat(5000)}`;
    const raw = async (query: string, variables: string) => {
      const response = await fetch(t.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${t.adminKey}` },
        body: `{"query":${JSON.stringify(query)},"variables":${variables}}`,
      });
      return { status: response.status, ...((await response.json()) as Omit<GraphQLResponse<unknown>, 'status'>) } as GraphQLResponse<unknown>;
    };
    assertRefused(await raw('query($k: String!) { verifyKey(input: { key: $k }) { code } }', `{"k":${deep}}`), 'BAD_USER_INPUT', 'a nested key variable');
    assertRefused(await raw('query($i: VerifyKeyInput!) { verifyKey(input: $i) { code } }', `{"i":{"key":${deep}}}`), 'BAD_USER_INPUT', 'a nested key field');
    assertRefused(await raw('query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) { code } }', `{"i":[{"key":${deep}}]}`), 'BAD_USER_INPUT', 'a nested key in a list');
  });

  test('an expected refusal is not logged as an unexpected error', async () => {
    const before = t.logs.length;
    assertRefused(await send('query($s: String) { users(filter: { search: $s }) { totalCount } }', { s: NUL }), 'BAD_USER_INPUT', 'search');
    const roleName = `dup-${Date.now()}`;
    await send('mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', { i: { name: roleName, permissions: [] } });
    assertRefused(await send('mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }', { i: { name: roleName, permissions: [] } }), 'CONFLICT', 'duplicate');
    const unexpected = t.logs.slice(before).filter((line) => line.includes('unexpected error'));
    assert.deepEqual(unexpected, []);
  });
});

describe('persisted queries', () => {
  test('a hash that does not match the query, or an unknown version, is BAD_REQUEST', async () => {
    const query = '{ __typename }';
    const post = (extensions: Record<string, unknown>) =>
      fetch(t.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${t.adminKey}` },
        body: JSON.stringify({ query, extensions }),
      }).then(async (r) => ({ status: r.status, ...((await r.json()) as { errors?: Array<{ message: string; extensions?: Record<string, unknown> }> }) }));
    const wrongHash = await post({ persistedQuery: { version: 1, sha256Hash: createHash('sha256').update('something else').digest('hex') } });
    assert.equal(wrongHash.status, 400);
    assert.deepEqual(errorCodes(wrongHash), ['BAD_REQUEST']);
    const version = await post({ persistedQuery: { version: 2, sha256Hash: createHash('sha256').update(query).digest('hex') } });
    assert.equal(version.status, 400);
    assert.deepEqual(errorCodes(version), ['BAD_REQUEST']);
  });
});

test('a bad value written into the document is BAD_USER_INPUT, as the same value in a variable is; a wrong document stays GRAPHQL_VALIDATION_FAILED', async () => {
  const cases: Array<[string, string, string, Record<string, unknown>]> = [
    ['an impossible date', '{ auditEvents(filter: { from: "2020-02-30T00:00:00Z" }) { nodes { id } } }', 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { from: '2020-02-30T00:00:00Z' } }],
    ['not a date', 'mutation { createApiKey(input: { name: "x", expiresAt: "tomorrow" }) { secret } }', 'mutation($e: DateTimeISO) { createApiKey(input: { name: "x", expiresAt: $e }) { secret } }', { e: 'tomorrow' }],
    ['an unknown group-by', '{ auditCounts(groupBy: COLOUR) { key } }', 'query($g: AuditGroupBy!) { auditCounts(groupBy: $g) { key } }', { g: 'COLOUR' }],
    ['an Int past 32 bits', '{ users(first: 99999999999) { totalCount } }', 'query($n: Int) { users(first: $n) { totalCount } }', { n: 99999999999 }],
    ['text for a number', '{ users(first: "ten") { totalCount } }', 'query($n: Int) { users(first: $n) { totalCount } }', { n: 'ten' }],
    ['details that are not an object', '{ auditEvents(filter: { detailsContains: [1] }) { nodes { id } } }', 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { detailsContains: [1] } }],
    ['a field the input does not have', '{ auditEvents(filter: { colour: "red" }) { nodes { id } } }', 'query($f: AuditEventFilter) { auditEvents(filter: $f) { nodes { id } } }', { f: { colour: 'red' } }],
  ];
  const before = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys');
  for (const [label, literal, withVariable, variables] of cases) {
    const [asLiteral, asVariable] = [await send(literal), await send(withVariable, variables)];
    assertRefused(asLiteral, 'BAD_USER_INPUT', `${label} (literal)`);
    assertRefused(asVariable, 'BAD_USER_INPUT', `${label} (variable)`);
    assert.equal(asLiteral.status, 400, label);
  }
  assert.deepEqual(await t.db.query('SELECT count(*)::int AS n FROM api_keys'), before, 'no key was made');
  // A variable's default is a value too: the same mistake as sending it.
  assertRefused(await send('query($n: Int = "ten") { users(first: $n) { totalCount } }'), 'BAD_USER_INPUT', 'a bad default');
  for (const wrong of ['{ users { nope } }', '{ users(colour: 1) { totalCount } }', 'query($n: String) { users(first: $n) { totalCount } }', '{ auditCounts { key } }']) {
    assertRefused(await send(wrong), 'GRAPHQL_VALIDATION_FAILED', wrong);
  }
});

describe('WebSocket operations get the same codes as HTTP, and keep the connection', () => {
  let client: Client;
  before(() => {
    client = createClient({ url: t.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.adminKey}` }, retryAttempts: 0, lazy: true });
  });
  after(() => client.dispose());

  function run(query: string, variables?: Record<string, unknown>, operationName?: string): Promise<{ data?: unknown; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> }> {
    return new Promise((resolve) => {
      let result = {};
      client.subscribe({ query, variables, operationName }, {
        next: (value) => (result = value),
        error: (errors) => resolve({ errors: errors as Array<{ message: string; extensions?: Record<string, unknown> }> }),
        complete: () => resolve(result),
      });
    });
  }

  test('syntax, validation, operation choice and variables', async () => {
    const cases: Array<[string, string, Record<string, unknown> | undefined, string | undefined, string]> = [
      ['syntax', 'subscription { alertRaised { ', undefined, undefined, 'GRAPHQL_PARSE_FAILED'],
      ['unknown field', 'subscription { nope }', undefined, undefined, 'GRAPHQL_VALIDATION_FAILED'],
      ['two operations, no name', 'query A { __typename } query B { __typename }', undefined, undefined, 'OPERATION_RESOLUTION_FAILURE'],
      ['bad date', 'subscription($f: AuditEventFilter) { auditEventRecorded(filter: $f) { id } }', { f: { from: '2020-02-30T00:00:00Z' } }, undefined, 'BAD_USER_INPUT'],
      ['bad date literal', 'subscription { auditEventRecorded(filter: { from: "2020-02-30T00:00:00Z" }) { id } }', undefined, undefined, 'BAD_USER_INPUT'],
      ['NUL', 'query($s: String) { users(filter: { search: $s }) { totalCount } }', { s: NUL }, undefined, 'BAD_USER_INPUT'],
    ];
    for (const [label, query, variables, operationName, code] of cases) {
      const result = await run(query, variables, operationName);
      assert.deepEqual(errorCodes(result), [code], `${label}: ${JSON.stringify(result.errors)}`);
      assert.equal(result.errors![0]!.extensions?.http, undefined);
    }
    // Still connected: the next operation runs.
    const after = await run('{ viewer { user { name } } }');
    assert.deepEqual(after.data, { viewer: { user: { name: 'admin' } } });
  });
});
