import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { generateKey, isWellFormedKey } from '../src/auth/key-format';
import { createDataSource, postgresVersionProblem } from '../src/db/data-source';
import { createTestDatabase, holdLock, type TestDatabase } from './helpers/database';
import { runToExit, startServerProcess } from './helpers/process';
import { postGraphQL } from './helpers/server';

const VIEWER = '{ viewer { user { name } permissions } }';
const PEPPER = randomBytes(32).toString('base64url');
const KEY_LINE = /^BOOTSTRAP ADMIN KEY \(shown once, store it now\): (\S+)$/;

function bootstrapKeyLines(stdout: string[]): string[] {
  return stdout.flatMap((line) => KEY_LINE.exec(line)?.[1] ?? []);
}

describe('embedded PostgreSQL (no DATABASE_URL)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'keyledger-embedded-'));
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  test('first start prints one admin key; a restart keeps the data and prints none', async () => {
    const first = await startServerProcess({ DATA_DIR: dataDir });
    let key: string;
    try {
      const printed = bootstrapKeyLines(first.stdout);
      assert.equal(printed.length, 1, 'exactly one bootstrap key line');
      key = printed[0]!;
      const viewer = await postGraphQL<{ viewer: { user: { name: string }; permissions: string[] } }>(first.url, key, VIEWER);
      assert.equal(viewer.data?.viewer.user.name, 'admin');
      assert.deepEqual(viewer.data?.viewer.permissions, ['*']);
      // The pepper is generated once, readable by its owner only.
      assert.equal(statSync(join(dataDir, 'key-pepper')).mode & 0o777, 0o600);
      // Log lines (JSON) never carry the key; only the labelled line does.
      assert.ok(first.stdout.filter((l) => l.startsWith('{')).every((l) => !l.includes(key)));
    } finally {
      assert.equal(await first.stop(), 0, 'SIGTERM exits cleanly');
    }

    const second = await startServerProcess({ DATA_DIR: dataDir });
    try {
      assert.deepEqual(bootstrapKeyLines(second.stdout), [], 'no key on a later start');
      assert.ok(second.stdout.every((l) => !l.includes(key)));
      const viewer = await postGraphQL<{ viewer: { user: { name: string } } }>(second.url, key, VIEWER);
      assert.equal(viewer.data?.viewer.user.name, 'admin', 'the same key still works: data survived');
    } finally {
      await second.stop();
    }

    // A pepper file edited by hand is refused, and the message names the file, not a variable never set.
    writeFileSync(join(dataDir, 'key-pepper'), randomBytes(32).toString('base64url') + '\n');
    const edited = await runToExit({ DATA_DIR: dataDir });
    assert.equal(edited.code, 78);
    assert.match(edited.stderr, /^keyledger: configuration error: KEY_PEPPER file \/.*key-pepper does not match the pepper this database was created with$/m);
  });
});

describe('DATABASE_URL', () => {
  let db: TestDatabase;
  after(() => db?.drop());

  test('BOOTSTRAP_ADMIN_KEY becomes the admin key and is never printed', async () => {
    db = await createTestDatabase();
    const key = generateKey('kl');
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: key });
    try {
      assert.deepEqual(bootstrapKeyLines(server.stdout), []);
      assert.ok(server.stdout.concat(server.stderr).every((l) => !l.includes(key)));
      const viewer = await postGraphQL<{ viewer: { user: { name: string } } }>(server.url, key, VIEWER);
      assert.equal(viewer.data?.viewer.user.name, 'admin');
      // Only the hash is stored: the key appears in no table.
      const [dump] = await db.query<{ text: string }>(
        `SELECT string_agg(t::text, ' ') AS text FROM (SELECT row_to_json(k)::text AS t FROM api_keys k
           UNION ALL SELECT row_to_json(e)::text FROM audit_events e UNION ALL SELECT row_to_json(u)::text FROM users u) x`,
      );
      assert.ok(!dump!.text.includes(key));
    } finally {
      await server.stop();
    }

    // A different pepper would make every key unknown: the server refuses it.
    const wrongPepper = await runToExit({ DATABASE_URL: db.url, KEY_PEPPER: randomBytes(32).toString('base64url') });
    assert.notEqual(wrongPepper.code, 0);
    assert.match(wrongPepper.stderr, /KEY_PEPPER/);
  });
});

describe('a KEY_PEPPER that is plainly not random', () => {
  const weak = 'password1'.repeat(5);
  const databases: TestDatabase[] = [];
  after(() => Promise.all(databases.map((d) => d.drop())));

  test('is refused for a new database, without echoing it, and nothing is kept that would block a good one', async () => {
    const db = await createTestDatabase();
    databases.push(db);
    const refused = await runToExit({ DATABASE_URL: db.url, KEY_PEPPER: weak });
    assert.equal(refused.code, 78);
    const lines = refused.stderr.trim().split('\n');
    assert.equal(lines.length, 1, refused.stderr);
    assert.match(lines[0]!, /KEY_PEPPER repeats a pattern/);
    assert.ok(!refused.stderr.includes('password1') && !refused.stdout.includes('password1'));

    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER });
    await server.stop();
  });

  test('still starts a database that was created with it, and says so at error level', async () => {
    const db = await createTestDatabase();
    databases.push(db);
    // An older release accepted such a pepper: its database holds that pepper's fingerprint.
    assert.equal((await runToExit({ DATABASE_URL: db.url, KEY_PEPPER: weak })).code, 78);
    await db.query(`INSERT INTO server_settings (name, value) VALUES ('pepper_fingerprint', $1)`, [
      createHmac('sha256', weak).update('keyledger pepper fingerprint v1').digest('hex'),
    ]);
    const key = generateKey('kl');
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: weak, BOOTSTRAP_ADMIN_KEY: key });
    try {
      const viewer = await postGraphQL<{ viewer: { user: { name: string } } }>(server.url, key, VIEWER);
      assert.equal(viewer.data?.viewer.user.name, 'admin');
      const warning = server.stdout.concat(server.stderr).find((line) => line.includes('KEY_PEPPER repeats a pattern'));
      assert.ok(warning, 'the weakness is logged');
      assert.equal(JSON.parse(warning).level, 50);
      assert.ok(server.stdout.concat(server.stderr).every((line) => !line.includes('password1')));
    } finally {
      await server.stop();
    }
  });
});

describe('bad configuration stops the server with one line naming the variable', () => {
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['KEY_PEPPER required with DATABASE_URL', { DATABASE_URL: 'postgres://127.0.0.1:1/x' }, /KEY_PEPPER/],
    ['PORT not a number', { PORT: 'abc', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /PORT/],
    ['DATABASE_URL not a URL', { DATABASE_URL: 'not a url', KEY_PEPPER: PEPPER }, /DATABASE_URL/],
    ['KEY_PEPPER too short', { DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: 'short' }, /KEY_PEPPER/],
    ['LOG_LEVEL unknown', { LOG_LEVEL: 'loud', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /LOG_LEVEL/],
    ['Splunk URL without token', { AUDIT_SPLUNK_HEC_URL: 'http://127.0.0.1:8088/services/collector/event', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /AUDIT_SPLUNK_HEC_TOKEN/],
    ['Splunk poll interval not a number, even with forwarding off', { AUDIT_SPLUNK_HEC_POLL_MS: 'soon', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /AUDIT_SPLUNK_HEC_POLL_MS/],
    ['KEY_PREFIX invalid', { KEY_PREFIX: 'KL_', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /KEY_PREFIX/],
    ["VERIFY_FAILURE_BURST (the contract's name) not count/seconds", { VERIFY_FAILURE_BURST: 'garbage', DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER }, /VERIFY_FAILURE_BURST/],
  ];
  for (const [name, env, pattern] of cases) {
    test(name, async () => {
      const result = await runToExit(env);
      assert.notEqual(result.code, 0);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line, got: ${result.stderr}`);
      assert.match(lines[0]!, pattern);
    });
  }

  test('a malformed BOOTSTRAP_ADMIN_KEY is refused without echoing it', async () => {
    const bad = 'kl_definitely-not-a-real-key-but-secret';
    const result = await runToExit({ BOOTSTRAP_ADMIN_KEY: bad, DATABASE_URL: 'postgres://127.0.0.1:1/x', KEY_PEPPER: PEPPER });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /BOOTSTRAP_ADMIN_KEY/);
    assert.ok(!result.stderr.includes(bad) && !result.stdout.includes(bad));
  });
});

describe('a start that cannot serve fails with one line saying why', () => {
  test('an unreachable database is named as DATABASE_URL', async () => {
    const result = await runToExit({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x', KEY_PEPPER: PEPPER });
    assert.equal(result.code, 1);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, /DATABASE_URL.*ECONNREFUSED/);
  });

  test('a database that accepts connections and never answers stops the start after the 5 s connect timeout, named as DATABASE_URL', { timeout: 30_000 }, async () => {
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as { port: number };
      // Without the timeout the start waits for the kernel (minutes): killed after 20 s, its code is null.
      const result = await runToExit({ DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/x`, KEY_PEPPER: PEPPER }, 20_000);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr.trim(), /^keyledger: failed to start: cannot reach PostgreSQL at DATABASE_URL: .*timeout/);
    } finally {
      silent.close();
    }
  });

  test('a port already in use is named before anything starts', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    const db = await createTestDatabase();
    try {
      const result = await runToExit({ PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: db.url, KEY_PEPPER: PEPPER });
      assert.equal(result.code, 1);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line, no stack from the WebSocket server or background work: ${result.stderr}`);
      assert.match(lines[0]!, new RegExp(`PORT ${port} on 127\\.0\\.0\\.1 is already in use`));
      const [{ count }] = await db.query<{ count: string }>(`SELECT count(*)::text AS count FROM information_schema.tables WHERE table_name = 'users'`);
      assert.equal(count, '0', 'no migration ran');
    } finally {
      taken.close();
      await db.drop();
    }
  });
});

describe('draining', () => {
  let db: TestDatabase;
  after(() => db?.drop());

  test('/readyz answers 503 once SIGTERM has begun the drain, on a connection still being served', async () => {
    db = await createTestDatabase();
    const key = generateKey('kl');
    const server = await startServerProcess({ DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: key });
    const { port } = new URL(server.url);
    const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
    const held = await holdLock(db.url, 'LOCK TABLE roles IN EXCLUSIVE MODE');
    const socket = connect(Number(port), '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => (received += String(chunk)));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    try {
      const body = JSON.stringify({ query: 'mutation { createRole(input: { name: "held-role", permissions: [] }) { id } }' });
      socket.write(`POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      await new Promise((r) => setTimeout(r, 300)); // the mutation waits on the lock
      server.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await held.release();
    }
    await closed;
    const statuses = [...received.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '503'], received);
    assert.match(received, /"status":"not ready"/);
    assert.match(received, /"createRole":\{"id"/);
    assert.equal(await exited, 0);
  });
});

describe('command line', () => {
  const cli = join(__dirname, '..', '..', 'bin', 'keyledger.js');
  const run = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c) => (stdout += String(c)));
      child.stderr.on('data', (c) => (stderr += String(c)));
      child.once('exit', (code) => resolve({ code, stdout, stderr }));
    });

  test('keygen prints one new well-formed key, with the prefix asked for', async () => {
    const a = await run(['keygen']);
    const b = await run(['keygen', '--prefix', 'acme']);
    assert.equal(a.code, 0);
    assert.ok(isWellFormedKey(a.stdout.trim()) && a.stdout.startsWith('kl_'));
    assert.ok(isWellFormedKey(b.stdout.trim()) && b.stdout.startsWith('acme_'));
    assert.notEqual(a.stdout, (await run(['keygen'])).stdout, 'a new key each time');
    const bad = await run(['keygen', '--prefix', 'Not_Valid']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /prefix/);
  });

  test('migrate applies pending migrations once, then has nothing to do', async () => {
    const db = await createTestDatabase();
    try {
      const env = { DATABASE_URL: db.url, KEY_PEPPER: PEPPER };
      const first = await run(['migrate'], env);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /applied: /);
      const tables = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('users', 'api_keys', 'audit_events')`);
      assert.equal(tables[0]!.n, 3);
      const second = await run(['migrate'], env);
      assert.equal(second.code, 0);
      assert.match(second.stdout, /no pending migrations/);
    } finally {
      await db.drop();
    }
  });

  test('a migration that cannot take a table lock within 10 s gives up, rolled back, naming why; it applies once the lock is free', { timeout: 60_000 }, async () => {
    const db = await createTestDatabase();
    const env = { DATABASE_URL: db.url, KEY_PEPPER: PEPPER };
    try {
      assert.equal((await run(['migrate'], env)).code, 0);
      // The newest migration pending again, as in an upgrade.
      const dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
      await dataSource.initialize();
      await dataSource.undoLastMigration();
      await dataSource.destroy();
      const applied = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM migrations'))[0]!.n;
      const before = await applied();
      // A long reader of every table: any ALTER would queue, and every query behind it.
      const tables = (await db.query<{ name: string }>(`SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'migrations'`)).map((r) => r.name);
      const reader = await holdLock(db.url, `LOCK TABLE ${tables.join(', ')} IN ACCESS SHARE MODE`);
      // Released after 30 s at the latest: a migration that waits for ever then applies, and the test fails.
      const releaseLate = setTimeout(() => void reader.release(), 30_000);
      let blocked: Awaited<ReturnType<typeof run>>;
      try {
        blocked = await run(['migrate'], env);
      } finally {
        clearTimeout(releaseLate);
        await reader.release();
      }
      assert.notEqual(blocked.code, 0);
      assert.match(blocked.stderr, /migration \w+\d{13} waited 10 s for a table lock another session holds: it was rolled back/);
      assert.equal(await applied(), before, 'nothing of it was recorded as applied');
      const retried = await run(['migrate'], env);
      assert.equal(retried.code, 0, retried.stderr);
      assert.equal(await applied(), before + 1);
    } finally {
      await db.drop();
    }
  });
});

test('a PostgreSQL older than 15 is refused by name before any migration runs', () => {
  assert.match(postgresVersionProblem(140012, '14.12') ?? '', /PostgreSQL 15 or later; this server is 14\.12/);
  assert.equal(postgresVersionProblem(150000, '15.0'), null);
  assert.equal(postgresVersionProblem(170006, '17.6'), null);
});
