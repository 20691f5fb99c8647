import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { getIntrospectionQuery, parse } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { MAX_QUERY_DEPTH, MAX_SAME_NAME, MAX_TOKENS } from '../src/server/document-guard';
import { queryCostError } from '../src/server/query-cost';
import { buildKeyledgerSchema } from '../src/schema/build-schema';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const send = (query: string, variables: Record<string, unknown> = {}) => postGraphQL(t.url, t.adminKey, query, variables);

async function auditQueryEvents(): Promise<number> {
  const [row] = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM audit_events WHERE action = 'audit.query'`);
  return row!.n;
}

test('thousands of aliased reports in one request are refused before any of them runs', async () => {
  const before = await auditQueryEvents();
  const fields = Array.from({ length: 1000 }, (_, i) => `c${i}: auditIntegrity { ok }`).join('\n');
  const response = await send(`{ ${fields} }`);
  assert.equal(response.status, 400);
  assert.deepEqual(errorCodes(response), ['GRAPHQL_VALIDATION_FAILED']);
  assert.match(response.errors![0]!.message, /cost/);
  assert.equal(response.data, undefined);
  assert.equal(await auditQueryEvents(), before, 'nothing ran, so nothing was audited');
  // A handful is fine.
  const few = await send('{ a: auditIntegrity { ok } b: auditIntegrity { ok } }');
  assert.equal(few.errors, undefined);
});

test('pages of pages are priced by the rows they may return: 500 users × 500 keys is refused, ordinary screens are not', async () => {
  const nested = (users: number, keys: number) => `{ users(first: ${users}) { nodes { id apiKeys(first: ${keys}) { nodes { id name status } } } } }`;
  const refused = await send(nested(500, 500));
  assert.deepEqual(errorCodes(refused), ['GRAPHQL_VALIDATION_FAILED']);
  // The same through a variable.
  const viaVariable = await send('query($n: Int) { users(first: $n) { nodes { apiKeys(first: $n) { nodes { id name } } } } }', { n: 500 });
  assert.deepEqual(errorCodes(viaVariable), ['GRAPHQL_VALIDATION_FAILED']);
  const screen = await send(nested(100, 50));
  assert.equal(screen.errors, undefined, JSON.stringify(screen.errors));
  const report = await send('{ auditEvents(first: 500) { nodes { id action actor { name } actorKey { name } } } }');
  assert.equal(report.errors, undefined, JSON.stringify(report.errors));
});

test(`a query more than ${MAX_QUERY_DEPTH} levels deep is refused, fragments included; introspection is not`, async () => {
  const chain = (levels: number) => `${'owner { '.repeat(levels)}id${' }'.repeat(levels)}`;
  const deep = await send(`{ viewer { user { ${chain(MAX_QUERY_DEPTH)} } } }`);
  assert.deepEqual(errorCodes(deep), ['GRAPHQL_VALIDATION_FAILED']);
  assert.match(deep.errors![0]!.message, /levels deep/);
  const viaFragment = await send(`query { viewer { user { ...Chain } } } fragment Chain on User { ${chain(MAX_QUERY_DEPTH)} }`);
  assert.deepEqual(errorCodes(viaFragment), ['GRAPHQL_VALIDATION_FAILED']);
  const shallow = await send(`{ viewer { user { ${chain(3)} } } }`);
  assert.equal(shallow.errors, undefined);
  const introspection = await send(getIntrospectionQuery());
  assert.equal(introspection.errors, undefined);
});

test('the same limits hold over WebSocket', async () => {
  const client = createClient({ url: t.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.adminKey}` }, retryAttempts: 0, lazy: true });
  try {
    const fields = Array.from({ length: 1000 }, (_, i) => `c${i}: auditIntegrity { ok }`).join('\n');
    const errors = await new Promise<unknown>((resolve) => {
      client.subscribe({ query: `{ ${fields} }` }, { next: () => {}, error: resolve, complete: () => resolve([]) });
    });
    assert.deepEqual(errorCodes({ errors: errors as Array<{ extensions?: Record<string, unknown> }> }), ['GRAPHQL_VALIDATION_FAILED']);
  } finally {
    await client.dispose();
  }
});

test('one response name selected thousands of times (quadratic to validate) is refused before validation', async () => {
  const repeated = (n: number) => `{ ${Array.from({ length: n }, () => 'a: viewer { user { id } }').join(' ')} }`;
  const response = await send(repeated(1000));
  assert.equal(response.status, 400);
  assert.deepEqual(errorCodes(response), ['GRAPHQL_VALIDATION_FAILED']);
  assert.match(response.errors![0]!.message, /"a" is selected more than/);
  // Few per selection set, but their children meet at one path a thousand times.
  const grid = `{ ${Array.from({ length: MAX_SAME_NAME }, () => `a: viewer { ${'b: user { id } '.repeat(MAX_SAME_NAME)}}`).join(' ')} }`;
  assert.deepEqual(errorCodes(await send(grid)), ['GRAPHQL_VALIDATION_FAILED']);
  // Fragments that multiply are counted, not expanded: 2^12 selections of `id`.
  const levels = 12;
  const fragments = Array.from({ length: levels }, (_, i) => `fragment F${i} on User { ${i === levels - 1 ? 'id' : `...F${i + 1} ...F${i + 1}`} }`).join(' ');
  const multiplied = await send(`{ viewer { user { ...F0 } } } ${fragments}`);
  assert.deepEqual(errorCodes(multiplied), ['GRAPHQL_VALIDATION_FAILED']);
  // A few repeats, as fragments on a shared type produce, are ordinary.
  const ordinary = await send(`{ ${Array.from({ length: MAX_SAME_NAME }, () => 'a: viewer { user { id } }').join(' ')} }`);
  assert.equal(ordinary.errors, undefined);
});

test(`a document of more than ${MAX_TOKENS} tokens is a parse failure, on HTTP and over WebSocket`, async () => {
  const huge = `{ ${Array.from({ length: MAX_TOKENS / 2 }, (_, i) => `t${i}: __typename`).join(' ')} }`;
  const response = await send(huge);
  assert.equal(response.status, 400);
  assert.deepEqual(errorCodes(response), ['GRAPHQL_PARSE_FAILED']);
  const client = createClient({ url: t.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.adminKey}` }, retryAttempts: 0, lazy: true });
  try {
    for (const [query, code] of [[huge, 'GRAPHQL_PARSE_FAILED'], [`{ ${Array.from({ length: 100 }, () => 'a: __typename').join(' ')} }`, 'GRAPHQL_VALIDATION_FAILED']]) {
      const errors = await new Promise<unknown>((resolve) => client.subscribe({ query: query! }, { next: () => {}, error: resolve, complete: () => resolve([]) }));
      assert.deepEqual(errorCodes({ errors: errors as Array<{ extensions?: Record<string, unknown> }> }), [code]);
    }
  } finally {
    await client.dispose();
  }
});

test('fragments that expand exponentially are refused, however short the document', async () => {
  const levels = 18;
  const fragments = Array.from({ length: levels }, (_, k) => (k === 0 ? 'fragment F0 on Query { __typename }' : `fragment F${k} on Query { a: viewer { x: __typename } ...F${k - 1} ...F${k - 1} }`));
  // Distinct paths at every level would pass the repeated-path rule; the expansion limit stops them.
  const nested = Array.from({ length: levels }, (_, k) => (k === 0 ? 'fragment G0 on User { id }' : `fragment G${k} on User { a: owner { ...G${k - 1} } b: owner { ...G${k - 1} } }`));
  const response = await send(`{ viewer { user { ...G${levels - 1} } } } ${nested.join(' ')}`);
  assert.equal(response.status, 400);
  assert.deepEqual(errorCodes(response), ['GRAPHQL_VALIDATION_FAILED']);
  assert.match(response.errors![0]!.message, /fields once its fragments are expanded/);
  // The same paths, doubled at every level.
  assert.deepEqual(errorCodes(await send(`{ ...F${levels - 1} } ${fragments.join(' ')}`)), ['GRAPHQL_VALIDATION_FAILED']);
});

test('an explicit null page size is priced at the default it gets', async () => {
  const pages = (size: string) => `{ users(first: ${size}) { nodes { apiKeys(first: ${size}) { nodes { owner { apiKeys(first: ${size}) { nodes { id name } } } } } } } }`;
  assert.deepEqual(errorCodes(await send(pages('null'))), ['GRAPHQL_VALIDATION_FAILED']);
  assert.deepEqual(errorCodes(await send(pages('50'))), ['GRAPHQL_VALIDATION_FAILED']);
  assert.equal((await send(pages('5'))).errors, undefined);
});

test('a page size past the maximum is BAD_USER_INPUT naming first (or limit), however much the query selects', async () => {
  for (const query of [
    'query($n: Int) { users(first: $n) { nodes { id name } } }',
    'query($n: Int) { apiKeys(first: $n) { nodes { id name } } }',
    'query($n: Int) { alerts(first: $n) { nodes { id } } }',
  ]) {
    const answer = await send(query, { n: 2147483647 });
    assert.deepEqual(errorCodes(answer), ['BAD_USER_INPUT'], `${query}: ${JSON.stringify(answer.errors)}`);
  }
  assert.deepEqual(errorCodes(await send('{ auditCounts(groupBy: ACTION, limit: 100000) { key count } }')), ['BAD_USER_INPUT']);
  // Within the maximum the price still counts: 500 users' 500 keys each is refused.
  assert.deepEqual(errorCodes(await send('{ users(first: 500) { nodes { apiKeys(first: 500) { nodes { id name } } } } }')), ['GRAPHQL_VALIDATION_FAILED']);
});

test("a usage series is priced by its buckets: every key's 10,000 minutes is refused, even for a member's own keys; a dashboard is not", async () => {
  const to = new Date();
  const from = new Date(to.getTime() - 9_999 * 60_000);
  const series = `usage(from: "${from.toISOString()}", to: "${to.toISOString()}", bucket: MINUTE) { start valid invalid }`;
  const everyKey = await send(`{ apiKeys(first: 500) { nodes { ${series} } } }`);
  assert.deepEqual(errorCodes(everyKey), ['GRAPHQL_VALIDATION_FAILED']);
  assert.match(everyKey.errors![0]!.message, /cost/);
  const roles = ((await send('{ roles { id name } }')).data as { roles: Array<{ id: string; name: string }> }).roles;
  const member = (await send('mutation($r: [ID!]) { createUser(input: { name: "cost-member", email: "cost-member@example.test", roleIds: $r }) { id } }', {
    r: [roles.find((r) => r.name === 'member')!.id],
  })).data as { createUser: { id: string } };
  const memberKey = ((await send('mutation($u: ID) { createApiKey(input: { name: "cost", ownerId: $u, permissions: ["*"] }) { secret } }', { u: member.createUser.id })).data as { createApiKey: { secret: string } }).createApiKey.secret;
  const aliased = `{ ${Array.from({ length: 4 }, (_, i) => `k${i}: apiKeys(first: 500) { nodes { ${series} } }`).join(' ')} }`;
  assert.deepEqual(errorCodes(await postGraphQL(t.url, memberKey, aliased)), ['GRAPHQL_VALIDATION_FAILED']);
  // One key's 10,000 minutes, and a day by the hour for a page of keys, are what screens ask for.
  const [{ id }] = await t.db.query<{ id: string }>('SELECT id FROM api_keys LIMIT 1');
  assert.equal((await send(`query($id: ID!) { apiKey(id: $id) { ${series} } }`, { id })).errors, undefined);
  assert.equal((await send('{ apiKeys(first: 50) { nodes { usage { start valid invalid } } } }')).errors, undefined);
});

test('an audit timeline is priced by its buckets, and one with more buckets than an answer holds is refused, not cut short', async () => {
  const filter = (days: number) => ({ from: new Date(Date.now() - days * 86_400_000).toISOString(), to: new Date().toISOString() });
  const timeline = 'query($f: AuditEventFilter, $b: TimeBucket!) { auditTimeline(filter: $f, bucket: $b) { start count } }';
  // 100 days of minutes is 144,000 buckets.
  const tooLong = await send(timeline, { f: filter(100), b: 'MINUTE' });
  assert.deepEqual(errorCodes(tooLong), ['BAD_USER_INPUT']);
  assert.match(tooLong.errors![0]!.message, /at most 100000 buckets/);
  const byDay = await send(timeline, { f: filter(100), b: 'DAY' });
  assert.equal(byDay.errors, undefined, JSON.stringify(byDay.errors));
  // Aliased, a month of minutes is too much for one request; an open range by the day is not.
  const aliased = `query($f: AuditEventFilter) { ${Array.from({ length: 8 }, (_, i) => `t${i}: auditTimeline(filter: $f, bucket: MINUTE) { start count }`).join(' ')} }`;
  assert.deepEqual(errorCodes(await send(aliased, { f: filter(30) })), ['GRAPHQL_VALIDATION_FAILED']);
  assert.equal((await send('{ auditTimeline(bucket: DAY) { start count } }')).errors, undefined);
});

test('a range open at its end is priced again as time passes: an admitted timeline is refused once its buckets have grown', async (context) => {
  context.mock.timers.enable({ apis: ['Date'], now: Date.now() });
  const schema = await buildKeyledgerSchema();
  const aliased = parse(`query($f: AuditEventFilter) { ${Array.from({ length: 4 }, (_, i) => `t${i}: auditTimeline(filter: $f, bucket: MINUTE) { start count }`).join(' ')} }`);
  // Coerced, as execution hands them over: the range runs from an hour ago to now.
  const variables = { f: { from: new Date(Date.now() - 3_600_000) } };
  assert.equal(queryCostError(schema, aliased, null, variables), null, 'four hours of minutes');
  context.mock.timers.tick(30 * 86_400_000);
  assert.match(String(queryCostError(schema, aliased, null, variables)?.message), /cost/, 'a month later, the same request is four months of minutes');
});
