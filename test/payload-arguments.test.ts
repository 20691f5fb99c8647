import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { buildSchema, isObjectType } from 'graphql';
import { FIELD_ARGUMENT_CHECKS } from '../src/server/payload-arguments';
import { roleIdByName, unique } from './helpers/fixtures';
import { createHuman, createKey, principalWithRoles, verify, type KeyPrincipal } from './helpers/key-principals';
import { errorCodes, postGraphQL, startTestServer, type TestServer } from './helpers/server';
import { REPO_ROOT } from './helpers/process';

/**
 * A mutation's answer is read after its change committed: an argument refused deep in that answer
 * must refuse the mutation before it runs, or the change happens and its answer (a new key's only
 * showing of its secret) is lost to `data: null`.
 */

let t: TestServer;
let verifier: KeyPrincipal;

before(async () => {
  t = await startTestServer();
  verifier = await principalWithRoles(t, ['verifier']);
});
after(() => t.close());

const gql = <T>(key: string, query: string, variables?: Record<string, unknown>) => postGraphQL<T>(t.url, key, query, variables);
const keysNamed = async (name: string) => (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys WHERE name = $1', [name]))[0]!.n;

test('createApiKey whose answer asks for usage over too many buckets: BAD_USER_INPUT, and no key was made', async () => {
  const name = unique('lost-secret');
  const refused = await gql(t.adminKey, `mutation($name: String!) { createApiKey(input: { name: $name }) {
    secret apiKey { id usage(from: "2000-01-01T00:00:00Z", bucket: MINUTE) { start } } } }`, { name });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal(refused.status, 400);
  assert.equal(refused.errors![0]!.extensions!.field, 'bucket');
  assert.equal(refused.data ?? null, null);
  assert.equal(await keysNamed(name), 0);
});

test('refused the same way: from after to (through variables), first beyond 500 on the owner, a tampered cursor, inside a fragment', async () => {
  const documents: Array<[string, Record<string, unknown>]> = [
    [`mutation($name: String!, $from: DateTimeISO, $to: DateTimeISO) { createApiKey(input: { name: $name }) {
        secret apiKey { usage(from: $from, to: $to) { start } } } }`, { from: '2030-01-02T00:00:00Z', to: '2030-01-01T00:00:00Z' }],
    [`mutation($name: String!) { createApiKey(input: { name: $name }) { secret apiKey { owner { apiKeys(first: 501) { totalCount } } } } }`, {}],
    [`mutation($name: String!) { createApiKey(input: { name: $name }) { secret apiKey { owner { apiKeys(after: "bm90LWEtY3Vyc29y") { totalCount } } } } }`, {}],
    [`mutation($name: String!) { createApiKey(input: { name: $name }) { secret apiKey { ...Usage } } }
      fragment Usage on ApiKey { usage(from: "2000-01-01T00:00:00Z", bucket: MINUTE) { start } }`, {}],
  ];
  for (const [document, variables] of documents) {
    const name = unique('refused');
    const refused = await gql(t.adminKey, document, { name, ...variables });
    assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT'], document);
    assert.equal(await keysNamed(name), 0, document);
  }
});

test('rotateApiKey by the owner with such an answer: refused, and the owner still holds a working key', async () => {
  const ownerId = await createHuman(t, [await roleIdByName(t, 'member')], 'self-rotator');
  const { secret, key } = await createKey(t, { ownerId, name: unique('own'), permissions: ['keys:own'] });
  const refused = await gql(secret, `mutation($id: ID!) { rotateApiKey(id: $id) {
    secret apiKey { id usage(from: "2000-01-01T00:00:00Z", bucket: MINUTE) { start } } } }`, { id: key.id });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'VALID');
  const successors = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys WHERE rotated_from_id = $1', [key.id]);
  assert.equal(successors[0]!.n, 0);
});

test('createUser whose answer asks for more than 500 of its keys: refused, and the user was not made', async () => {
  const name = unique('no-user');
  const refused = await gql(t.adminKey, `mutation($input: CreateUserInput!) { createUser(input: $input) { id apiKeys(first: 501) { totalCount } } }`, {
    input: { name, email: `${name}@example.test` },
  });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM users WHERE name = $1', [name]))[0]!.n, 0);
});

test('arguments the resolvers accept pass: the key is made and its secret shown with its usage', async () => {
  const name = unique('fine');
  const made = await gql<{ createApiKey: { secret: string; apiKey: { usage: unknown[]; owner: { apiKeys: { totalCount: number } } } } }>(
    t.adminKey,
    `mutation($name: String!) { createApiKey(input: { name: $name }) {
      secret apiKey { usage(bucket: DAY) { start } owner { apiKeys(first: 500) { totalCount } } } } }`,
    { name },
  );
  assert.deepEqual(made.errors, undefined);
  assert.match(made.data!.createApiKey.secret, /^kl_/);
  assert.ok(made.data!.createApiKey.apiKey.usage.length >= 1);
});

test('queries are left to their resolvers: a bad usage range in a query refuses that field only', async () => {
  const { key } = await createKey(t, { name: unique('queried') });
  const answer = await gql<{ apiKey: { id: string } | null }>(t.adminKey, `query($id: ID!) { apiKey(id: $id) { id usage(from: "2000-01-01T00:00:00Z", bucket: MINUTE) { start } } }`, { id: key.id });
  assert.deepEqual(errorCodes(answer), ['BAD_USER_INPUT']);
  assert.equal(answer.status, 200);
});

test('every object field that takes arguments has its checks here, so a new one cannot be forgotten', () => {
  const schema = buildSchema(readFileSync(join(REPO_ROOT, 'src', 'schema', 'schema.graphql'), 'utf8'));
  const withArguments = Object.values(schema.getTypeMap())
    .filter((type) => isObjectType(type) && !type.name.startsWith('__') && !['Query', 'Mutation', 'Subscription'].includes(type.name))
    .flatMap((type) => Object.values((type as import('graphql').GraphQLObjectType).getFields()).filter((f) => f.args.length > 0).map((f) => `${type.name}.${f.name}`));
  assert.deepEqual(withArguments.sort(), Object.keys(FIELD_ARGUMENT_CHECKS).sort());
});

test('an open usage range at the very edge of the limit is refused up front, not after the key is made', async () => {
  const name = unique('edge');
  // 30 s short of 10,000 minutes now; by the time the answer is read it may be past it.
  const from = new Date(Date.now() - 10_000 * 60_000 + 30_000).toISOString();
  const refused = await gql(t.adminKey, `mutation($name: String!, $from: DateTimeISO) { createApiKey(input: { name: $name }) {
    secret apiKey { usage(from: $from, bucket: MINUTE) { start } } } }`, { name, from });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal(await keysNamed(name), 0);
});

test('an open usage range starting a moment from now is refused up front too', async () => {
  const name = unique('ahead');
  const from = new Date(Date.now() + 30_000).toISOString();
  const refused = await gql(t.adminKey, `mutation($name: String!, $from: DateTimeISO) { createApiKey(input: { name: $name }) {
    secret apiKey { usage(from: $from) { start } } } }`, { name, from });
  assert.deepEqual(errorCodes(refused), ['BAD_USER_INPUT']);
  assert.equal(refused.status, 400);
  assert.equal(await keysNamed(name), 0);
});
