import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import { createTestDatabase, holdLock, type TestDatabase } from './helpers/database';
import { startServerProcess } from './helpers/process';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * The WebSocket connection's life: what a connection_init may cost, limits answered per operation,
 * connections that vanish while their key is checked, and shutdown with open sockets.
 */

interface Message {
  type: string;
  id?: string;
  payload?: { data?: Record<string, unknown>; errors?: Array<{ message: string; extensions?: { code?: string } }> } & Array<{ message: string; extensions?: { code?: string } }>;
}

/** A raw graphql-transport-ws socket: every message it receives, and how it closed. */
function rawSocket(url: string) {
  const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const messages: Message[] = [];
  const waiters: Array<() => void> = [];
  socket.on('message', (data) => {
    messages.push(JSON.parse(String(data)) as Message);
    waiters.splice(0).forEach((wake) => wake());
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  socket.on('error', () => {}); // a refused socket is seen through `closed`
  const opened = new Promise<void>((resolve) => socket.once('open', () => resolve()));
  return {
    socket,
    messages,
    closed,
    opened,
    send: async (message: Record<string, unknown>) => {
      await opened;
      socket.send(JSON.stringify(message));
    },
    /** Waits for a message that `match` accepts, or fails after 5 s. */
    next: async (match: (m: Message) => boolean): Promise<Message> => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = messages.find(match);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such message; received ${JSON.stringify(messages)}`);
        await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), new Promise((resolve) => setTimeout(resolve, 100))]);
      }
    },
  };
}

async function createKey(t: TestServer, input: Record<string, unknown>): Promise<{ id: string; secret: string }> {
  const created = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    t.url,
    t.adminKey,
    'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }',
    { input: { name: `ws-${randomBytes(3).toString('hex')}`, permissions: ['*'], ...input } },
  );
  assert.deepEqual(created.errors, undefined);
  return { id: created.data!.createApiKey.apiKey.id, secret: created.data!.createApiKey.secret };
}

async function openConnections(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('keyledger_websocket_connections '));
  assert.ok(line, 'the gauge is exported');
  return Number(line.split(' ')[1]);
}

describe('one server in process', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(() => t.close());

  test('a message larger than an HTTP body (1 MiB), even before connection_init, closes the socket (1009) unread', async () => {
    const printed: unknown[] = [];
    const print = console.error;
    console.error = (...args: unknown[]) => printed.push(args);
    try {
      const ws = rawSocket(t.url);
      await ws.send({ type: 'connection_init', payload: { padding: 'x'.repeat(2 * 1024 * 1024) } });
      assert.equal((await ws.closed).code, 1009);
    } finally {
      console.error = print;
    }
    assert.deepEqual(printed, [], 'a client cannot make the server print to stderr');
    assert.equal((await fetch(`${t.baseUrl}/healthz`)).status, 200);
  });

  test('a rate-limited key at connection_init closes with 1013 Try Again Later and when, not 4403 like a dead key', async () => {
    const key = await createKey(t, { rateLimit: { limit: 1, windowSeconds: 60 } });
    const first = rawSocket(t.url);
    await first.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
    await first.next((m) => m.type === 'connection_ack');
    first.socket.close();

    const second = rawSocket(t.url);
    await second.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
    const closed = await second.closed;
    assert.equal(closed.code, 1013, JSON.stringify(closed));
    assert.match(closed.reason, /^Rate limited: retry in \d+ s$/);

    const revoked = await createKey(t, {});
    await postGraphQL(t.url, t.adminKey, 'mutation($id: ID!) { revokeApiKey(id: $id, reason: "test") { id } }', { id: revoked.id });
    const dead = rawSocket(t.url);
    await dead.send({ type: 'connection_init', payload: { authorization: `Bearer ${revoked.secret}` } });
    assert.equal((await dead.closed).code, 4403);
  });

  test('a spent quota is an error on that operation (UNAUTHENTICATED, USAGE_EXCEEDED); the socket stays open', async () => {
    // connection_init is one verification, the first operation the second.
    const key = await createKey(t, { remaining: 2 });
    const ws = rawSocket(t.url);
    await ws.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
    await ws.next((m) => m.type === 'connection_ack');
    await ws.send({ type: 'subscribe', id: '1', payload: { query: '{ viewer { key { id } } }' } });
    const first = await ws.next((m) => m.id === '1' && m.type === 'next');
    assert.deepEqual(first.payload?.data, { viewer: { key: { id: key.id } } });
    await ws.send({ type: 'subscribe', id: '2', payload: { query: '{ viewer { key { id } } }' } });
    const refused = await ws.next((m) => m.id === '2' && m.type === 'error');
    assert.equal(refused.payload?.[0]?.extensions?.code, 'UNAUTHENTICATED');
    assert.match(refused.payload?.[0]?.message ?? '', /USAGE_EXCEEDED/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(ws.socket.readyState, WebSocket.OPEN, 'limits speak per operation, not per connection');
    ws.socket.close();
  });

  test('a socket gone while its key was being checked is not kept (nor its key) as an open connection', async () => {
    // A key with a quota is checked against the database; holding its row keeps the check waiting.
    const key = await createKey(t, { remaining: 1000 });
    assert.equal(await openConnections(t.baseUrl), 0);
    const held = await holdLock(t.db.url, 'SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE', [key.id]);
    try {
      const ws = rawSocket(t.url);
      await ws.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
      await new Promise((resolve) => setTimeout(resolve, 200));
      ws.socket.terminate();
      await ws.closed;
    } finally {
      await held.release();
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await openConnections(t.baseUrl), 0);

    const kept = rawSocket(t.url);
    await kept.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
    await kept.next((m) => m.type === 'connection_ack');
    assert.equal(await openConnections(t.baseUrl), 1, 'the gauge counts a connection that stays');
    kept.socket.close();
    await kept.closed;
  });
});

/** A masked client frame (RFC 6455 5.3), for a client written by hand. */
function clientFrame(text: string, opcode = 0x1): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const length = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x80 | opcode]), length, mask, masked]);
}

/** A client that authenticates, then never reads again: it will not answer a close frame. */
async function frozenClient(url: string, key: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = tcpConnect(Number(port), hostname);
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(
    `GET /graphql HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`,
  );
  let received = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack: ${received}`)), 5000);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received.includes('101 Switching Protocols') && !received.includes('connection_init')) {
        socket.write(clientFrame(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } })));
        received += 'connection_init';
      }
      if (received.includes('connection_ack')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  socket.removeAllListeners('data');
  socket.pause();
  socket.on('error', () => {});
  return socket;
}

describe('shutdown with open sockets (real server processes)', () => {
  const PEPPER = randomBytes(32).toString('hex');
  const ADMIN_KEY = generateKey('kl');
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db?.drop();
  });

  test('a client that never answers the close frame does not hold SIGTERM: the process exits 0 within seconds', { timeout: 60_000 }, async () => {
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: ADMIN_KEY });
    const frozen = await frozenClient(server.url, ADMIN_KEY);
    const started = Date.now();
    const code = await server.stop('SIGTERM');
    const took = Date.now() - started;
    frozen.destroy();
    assert.equal(code, 0, server.stderr.join('\n'));
    assert.ok(took < 5000, `exit took ${took} ms`);
  });

  test('a mutation in flight over WebSocket at SIGTERM is answered before the socket closes (1001)', { timeout: 60_000 }, async () => {
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: ADMIN_KEY });
    let closeCode: number | null = null;
    const client = createClient({
      url: server.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${ADMIN_KEY}` },
      retryAttempts: 0,
      on: { closed: (event) => (closeCode = (event as { code: number }).code) },
    });
    const name = `ws-shutdown-${randomBytes(3).toString('hex')}`;
    // Holding the roles table keeps the mutation in flight across the signal.
    const held = await holdLock(db.url, 'LOCK TABLE roles IN EXCLUSIVE MODE');
    let exited: Promise<number | null>;
    const result = new Promise<Record<string, unknown>>((resolve, reject) => {
      let value: Record<string, unknown> = {};
      client.subscribe({ query: `mutation { createRole(input: { name: "${name}", permissions: ["reports:read"] }) { id name } }` }, {
        next: (next) => (value = next as Record<string, unknown>),
        error: reject,
        complete: () => resolve(value),
      });
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 500));
      exited = server.stop('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      await held.release();
    }
    const answered = (await result) as { data?: { createRole: { id: string; name: string } } };
    assert.equal(answered.data?.createRole.name, name);
    const stored = await db.query('SELECT id FROM roles WHERE name = $1', [name]);
    assert.equal(stored.length, 1);
    assert.equal(await exited!, 0);
    await client.dispose();
    assert.equal(closeCode, 1001, 'then the socket is closed as going away');
  });

  test('a mutation whose client left before SIGTERM still finishes before the process exits', { timeout: 60_000 }, async () => {
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: ADMIN_KEY });
    const name = `ws-orphan-${randomBytes(3).toString('hex')}`;
    const held = await holdLock(db.url, 'LOCK TABLE roles IN EXCLUSIVE MODE');
    let exited: Promise<number | null>;
    try {
      const ws = rawSocket(server.url);
      await ws.send({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } });
      await ws.next((m) => m.type === 'connection_ack');
      await ws.send({ type: 'subscribe', id: '1', payload: { query: `mutation { createRole(input: { name: "${name}", permissions: ["reports:read"] }) { id } }` } });
      await new Promise((resolve) => setTimeout(resolve, 300));
      ws.socket.terminate();
      await ws.closed;
      exited = server.stop('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      await held.release();
    }
    assert.equal(await exited!, 0);
    assert.equal((await db.query('SELECT 1 FROM roles WHERE name = $1', [name])).length, 1, 'committed whole, with nobody left to answer');
  });
});
