import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import { CreateApiKeyDocument, CreateUserDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

function wsUrl(): string {
  return t.url.replace(/^http/, 'ws');
}

function connect(connectionParams: Record<string, unknown>): Client {
  return createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams, retryAttempts: 0, lazy: true });
}

/** Runs one operation to completion, resolving with its result or rejecting with the close event. */
function execute<T>(client: Client, query: string): Promise<{ data?: T; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> }> {
  return new Promise((resolve, reject) => {
    let result: { data?: T; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> } = {};
    client.subscribe<T>({ query }, {
      next: (value) => (result = value as typeof result),
      error: reject,
      complete: () => resolve(result),
    });
  });
}

test('a valid key in connection_init runs operations over graphql-transport-ws', async () => {
  const client = connect({ authorization: `Bearer ${t.adminKey}` });
  try {
    const result = await execute<{ viewer: { user: { name: string } } }>(client, '{ viewer { user { name } } }');
    assert.equal(result.data?.viewer.user.name, 'admin');
  } finally {
    await client.dispose();
  }
});

test('a missing, malformed or unknown key closes the socket with 4403 Forbidden', async () => {
  for (const params of [{}, { authorization: 'Bearer kl_nope' }, { authorization: `Bearer ${generateKey('kl')}` }]) {
    const client = connect(params);
    try {
      await assert.rejects(execute(client, '{ viewer { user { name } } }'), (event: { code?: number }) => event.code === 4403);
    } finally {
      await client.dispose();
    }
  }
});

test('a denied operation over WebSocket is FORBIDDEN and audited; the connection stays usable', async () => {
  const created = await t.request(t.adminKey, CreateUserDocument, {
    input: { name: 'ws member', email: 'ws-member@example.com' },
  });
  const userId = created.data!.createUser.id;
  const key = await t.request(t.adminKey, CreateApiKeyDocument, {
    input: { ownerId: userId, name: 'ws key' },
  });
  const client = connect({ authorization: `Bearer ${key.data!.createApiKey.secret}` });
  try {
    const denied = await execute(client, '{ users { totalCount } }');
    assert.equal(denied.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    assert.ok(!JSON.stringify(denied).includes('stack'));
    const again = await execute<{ viewer: { user: { id: string } } }>(client, '{ viewer { user { id } } }');
    assert.equal(again.data?.viewer.user.id, userId);
  } finally {
    await client.dispose();
  }
  const [event] = await t.db.query<{ action: string; outcome: string; details: { operation: string } }>(
    `SELECT action, outcome, details FROM audit_events WHERE action = 'authz.denied' AND actor_id = $1`,
    [userId],
  );
  assert.equal(event?.outcome, 'DENIED');
  assert.equal(event?.details.operation, 'Query.users');
});

test("a server failure fails the operation, not the socket, and never reaches the client's close reason or answer", async () => {
  const verification = t.server.services.verification;
  const original = verification.verifyNow.bind(verification);
  const failOnce = (message = 'database "kl_secret_name" is not currently accepting connections') => {
    verification.verifyNow = () => {
      verification.verifyNow = original;
      throw new Error(message);
    };
  };
  // One socket for every operation (a lazy client closes it after each).
  const client = createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.adminKey}` }, retryAttempts: 0, lazy: false });
  let sockets = 0;
  client.on('connected', () => sockets++);
  try {
    assert.equal((await execute<{ __typename: string }>(client, '{ __typename }')).data?.__typename, 'Query');
    failOnce();
    // graphql-ws hands an operation refused before it ran to the sink's error callback.
    await assert.rejects(execute(client, '{ __typename }'), (errors: Array<{ message: string; extensions?: { code?: string } }>) => {
      assert.deepEqual(errors.map((e) => [e.message, e.extensions?.code]), [['Internal server error', 'INTERNAL_SERVER_ERROR']]);
      return true;
    });
    assert.equal((await execute<{ __typename: string }>(client, '{ __typename }')).data?.__typename, 'Query');
    assert.equal(sockets, 1, 'the socket stayed open');
  } finally {
    verification.verifyNow = original;
    await client.dispose();
  }

  // At connection_init a failure of the server's is not a rejected key (4403): 1011, nothing more
  // said; the database unreachable is 1013 (try again later), nothing more said either.
  const initClosed = () =>
    new Promise<{ code: number; reason: string }>((resolve, reject) => {
      const socket = new WebSocket(wsUrl(), 'graphql-transport-ws');
      socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${t.adminKey}` } })));
      socket.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
      socket.on('error', reject);
    });
  try {
    failOnce('kl_secret_name: an invariant broke');
    assert.deepEqual(await initClosed(), { code: 1011, reason: 'Internal server error' });
    failOnce();
    assert.deepEqual(await initClosed(), { code: 1013, reason: 'The database is unavailable: retry shortly' });
  } finally {
    verification.verifyNow = original;
  }
});

test('a parse error over WebSocket says where, as over HTTP', async () => {
  const client = connect({ authorization: `Bearer ${t.adminKey}` });
  try {
    await assert.rejects(execute(client, '{ viewer { '), (errors: Array<{ locations?: unknown; extensions?: { code?: string } }>) => {
      assert.equal(errors[0]?.extensions?.code, 'GRAPHQL_PARSE_FAILED');
      assert.deepEqual(errors[0]?.locations, [{ line: 1, column: 12 }]);
      return true;
    });
  } finally {
    await client.dispose();
  }
});
