import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { Client } from 'pg';
import WebSocket from 'ws';
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
  // Every request fails alike while it lasts: the log says so once, not once per request.
  const answers = await Promise.all(Array.from({ length: 20 }, () => post(generateKey('kl'))));
  assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([503]));
  const failures = t.logs.filter((line) => line.includes('"msg":"request failed"'));
  assert.equal(failures.length, 1, failures.join('\n'));

  await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS true`);
  let status = 0;
  for (let attempt = 0; attempt < 100 && status !== 401; attempt++) {
    status = (await post(generateKey('kl'))).status;
    if (status !== 401) await sleep(100);
  }
  assert.equal(status, 401, 'an unknown key is refused as usual once the database is back');
});

test('with the database refusing connections, a WebSocket connection_init closes with 1013 (Try Again Later), without the driver\'s text', async () => {
  await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS false`);
  await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
  try {
    const socket = new WebSocket(t.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
    await once(socket, 'open');
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${generateKey('kl')}` } }));
    const { code, reason } = await closed;
    assert.equal(code, 1013, reason);
    assert.match(reason, /retry/);
    assert.doesNotMatch(reason, /accepting connections|terminat|kl_test_/);
  } finally {
    await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS true`);
  }
});

test('a resolver whose statement is cancelled after the key was accepted: 503 with Retry-After when nothing was answered', async () => {
  const ask = (query: string) =>
    fetch(`${t.baseUrl}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.adminKey}` },
      body: JSON.stringify({ query }),
    });
  for (const [root, query] of [
    ['createRole', 'mutation { createRole(input: { name: "during-outage", permissions: [] }) { id } }'],
    ['auditEvents', '{ auditEvents(first: 1) { nodes { id } } }'],
  ] as const) {
    // Checking a valid key writes no audit event; the mutation's event and the audited read wait on the lock and are cancelled.
    const blocker = new Client({ connectionString: t.db.url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE audit_staging IN ACCESS EXCLUSIVE MODE');
      const answer = ask(query);
      // The sealer may be waiting on the same lock and be found first: cancelled too, it tries
      // again later. Waiters are cancelled until the request is answered.
      const blockerPid = (blocker as unknown as { processID: number }).processID;
      let answered = false;
      answer.then(() => (answered = true), () => (answered = true));
      let cancelled = 0;
      for (let round = 0; round < 100 && !answered; round++) cancelled += await cancelWaiting(blockerPid);
      assert.ok(cancelled >= 1, `${query} waited on the lock`);
      const response = await answer;
      const text = await response.text();
      assert.equal(response.status, 503, `${query}: ${text}`);
      assert.equal(response.headers.get('retry-after'), '5');
      const body = JSON.parse(text) as { data?: unknown; errors: Array<{ path?: string[]; extensions: { code: string } }> };
      assert.equal(body.data ?? null, null);
      assert.equal(body.errors[0]!.extensions.code, 'INTERNAL_SERVER_ERROR');
      assert.doesNotMatch(text, /cancel|statement|audit_staging|at .*\.js/);
      assert.deepEqual(body.errors[0]!.path, [root], 'failed in the resolver, after the key was accepted');
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      await blocker.end();
    }
  }
  assert.equal((await ask('{ auditEvents(first: 1) { nodes { id } } }')).status, 200, 'answered as usual once the lock is gone');
  assert.equal(await roleCount('during-outage'), 0, 'the cancelled mutation left nothing behind');
});

async function roleCount(name: string): Promise<number> {
  const [row] = (await t.db.query('SELECT count(*)::int AS n FROM roles WHERE name = $1', [name])) as Array<{ n: number }>;
  return row!.n;
}

/** Cancels the server's statements waiting on a lock (not the blocker's); how many it cancelled. */
async function cancelWaiting(blockerPid: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const rows = await admin.query(
      `SELECT pg_cancel_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> $2`,
      [t.db.name, blockerPid],
    );
    const cancelled = rows.rows.filter((row: { ok: boolean }) => row.ok).length;
    if (cancelled > 0) return cancelled;
    await sleep(20);
  }
  return 0;
}

test('a statement cancelled while a request waits on it is 503 with Retry-After, and nothing of the driver\'s text', async () => {
  // The test holds a lock the key check needs, then cancels the server's statement waiting on it.
  const blocker = new Client({ connectionString: t.db.url });
  await blocker.connect();
  try {
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE');
    const answer = post(generateKey('kl'));
    assert.equal(await cancelWaiting((blocker as unknown as { processID: number }).processID), 1, 'the key check waited on the lock and was cancelled');
    const response = await answer;
    const text = await response.text();
    assert.equal(response.status, 503, text);
    assert.equal(response.headers.get('retry-after'), '5');
    assert.doesNotMatch(text, /cancel|statement|api_keys|at .*\.js/);
  } finally {
    await blocker.query('ROLLBACK').catch(() => {});
    await blocker.end();
  }
});

test('failures still held back when the server stops are counted in the log as it stops', async () => {
  const own = await startTestServer();
  try {
    await admin.query(`ALTER DATABASE ${own.db.name} ALLOW_CONNECTIONS false`);
    await own.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
    const failing = () =>
      fetch(`${own.baseUrl}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${generateKey('kl')}` },
        body: JSON.stringify({ query: '{ viewer { permissions } }' }),
      });
    for (let i = 0; i < 6; i++) assert.equal((await failing()).status, 503);
    const failures = () => own.logs.filter((line) => line.includes('"msg":"request failed"')).map((line) => JSON.parse(line) as { heldBack?: number });
    assert.deepEqual(failures().map((line) => line.heldBack), [undefined], 'one line so far, five held back');
  } finally {
    await admin.query(`ALTER DATABASE ${own.db.name} ALLOW_CONNECTIONS true`);
    // Well inside the interval, so only the stop can write the count.
    await own.close();
  }
  const lines = own.logs.filter((line) => line.includes('"msg":"request failed"')).map((line) => JSON.parse(line) as { heldBack?: number });
  assert.deepEqual(lines.map((line) => line.heldBack), [undefined, 5]);
});
