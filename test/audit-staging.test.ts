import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { PoolClient } from 'pg';
import type { DataSource } from 'typeorm';
import { createDataSource, migrate } from '../src/db/data-source';
import { ActorType, AuditOutcome } from '../src/entities/enums';
import type { Actor } from '../src/services/actor';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { AuditReportService } from '../src/services/audit-report.service';
import { AuditService, withCommit } from '../src/services/audit.service';
import { generateKey } from '../src/auth/key-format';
import { createTestDatabase, type TestDatabase } from './helpers/database';

/**
 * A change's event rides on its COMMIT as an EXECUTE of a statement each connection prepares
 * once. One pooled connection here, so every transaction meets the statement it prepared before.
 */

let db: TestDatabase;
let dataSource: DataSource;
let audit: AuditService;

before(async () => {
  db = await createTestDatabase();
  dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} }, 1);
  await dataSource.initialize();
  await migrate(dataSource);
  audit = new AuditService(dataSource);
});
after(async () => {
  await audit.close();
  await dataSource.destroy();
  await db.drop();
});

const sealedActions = async () =>
  (await db.query<{ action: string }>('SELECT action FROM audit_events ORDER BY id')).map((row) => row.action);

test('a change whose COMMIT failed after its connection prepared the staging statement leaves that connection able to audit', async () => {
  const errors: unknown[] = [];
  const own = new AuditService(dataSource, (error) => errors.push(error));
  await assert.rejects(
    own.transaction(async (tx) => {
      await own.record(tx, SYSTEM_ACTOR, { action: 'test.rolled-back' });
      await withCommit(tx, 'SELECT 1 / 0'); // fails in the COMMIT's round trip, after the EXECUTE
    }),
    /division by zero/,
  );
  // PREPARE is not undone by the rollback: the one pooled connection still has it, and uses it.
  const prepared = await dataSource.query(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'keyledger_stage_event%'`);
  assert.equal(prepared.length, 1);
  await own.recordAlone(SYSTEM_ACTOR, { action: 'test.after-failure' }, { waitForSeal: true });
  await own.recordAlone(SYSTEM_ACTOR, { action: 'test.again' }, { waitForSeal: true });
  const actions = await sealedActions();
  assert.ok(!actions.includes('test.rolled-back'), 'the failed change left no event');
  assert.deepEqual(actions.slice(-2), ['test.after-failure', 'test.again']);
  assert.deepEqual(errors, [], 'staging stayed prepared');
  await own.close();
});

test('an event staged through the prepared statement keeps every field in its column, secrets blanked', async () => {
  const actor: Actor = {
    type: ActorType.USER,
    userId: '6d0c6e0e-8a9e-4f7e-9d6e-0b5c2a1f3e4d',
    keyId: '7d0c6e0e-8a9e-4f7e-9d6e-0b5c2a1f3e4d',
    ip: '10.9.8.7',
    userAgent: "curl/8 it's",
    requestId: 'request-1',
    permissions: [],
  };
  const secret = generateKey('kl');
  await audit.transaction(async (tx) => {
    await audit.record(tx, actor, {
      action: 'test.fields',
      outcome: AuditOutcome.DENIED,
      targetType: 'api_key',
      targetId: 'target-1',
      details: { reason: `pasted ${secret}`, nested: { quote: "o'brien", list: [1, null] } },
    });
  });
  await audit.sealed();
  const [row] = await db.query<Record<string, unknown>>(
    `SELECT action, outcome, actor_type, actor_id, actor_key_id, target_type, target_id, ip, user_agent, request_id, details
       FROM audit_events WHERE action = 'test.fields'`,
  );
  assert.deepEqual(
    { ...row, details: undefined },
    {
      action: 'test.fields',
      outcome: 'DENIED',
      actor_type: 'USER',
      actor_id: actor.userId,
      actor_key_id: actor.keyId,
      target_type: 'api_key',
      target_id: 'target-1',
      ip: '10.9.8.7',
      user_agent: "curl/8 it's",
      request_id: 'request-1',
      details: undefined,
    },
  );
  const details = row!.details as { reason: string; nested: unknown };
  assert.ok(!details.reason.includes(secret), 'the key-shaped text is blanked');
  assert.deepEqual(details.nested, { quote: "o'brien", list: [1, null] });
  assert.equal((await new AuditReportService(dataSource).integrity(null, null)).ok, true);
});

test('an event staged with a microsecond time (by another writer) is sealed with its time cut to the millisecond it was hashed at', async () => {
  await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ('2026-05-04T03:02:01.234567Z', 'test.microseconds', 'SUCCESS', 'SYSTEM')`);
  await audit.sealed();
  const [row] = await db.query<{ at: string }>(`SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'HH24:MI:SS.US') AS at FROM audit_events WHERE action = 'test.microseconds'`);
  assert.equal(row!.at, '03:02:01.234000');
  assert.equal((await new AuditReportService(dataSource).integrity(null, null)).ok, true);
});

test('a staged event the seal cannot move fails the whole pass: nothing appended, the head unmoved, the events sealed by a later pass', async () => {
  await audit.sealed();
  const head = async () => (await db.query<{ last_id: string; hash: string }>('SELECT last_id::text, hash FROM audit_chain_head'))[0];
  const before = await head();
  const events = async () => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM audit_events'))[0]!.n);
  const count = await events();
  // A trigger that keeps one staged row from leaving, as a writer holding it back would.
  await db.query(`CREATE FUNCTION test_keep_staged() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN IF OLD.action = 'test.stuck' THEN RETURN NULL; END IF; RETURN OLD; END $$`);
  await db.query('CREATE TRIGGER test_keep_staged BEFORE DELETE ON audit_staging FOR EACH ROW EXECUTE FUNCTION test_keep_staged()');
  const errors: unknown[] = [];
  const failing = new AuditService(dataSource, (error) => errors.push(error));
  await failing.recordAlone(SYSTEM_ACTOR, { action: 'test.before-stuck' });
  await failing.recordAlone(SYSTEM_ACTOR, { action: 'test.stuck' });
  await failing.sealed();
  assert.match(String(errors[0]), /audit seal moved 1 of 2 hashed events/);
  assert.deepEqual(await head(), before);
  assert.equal(await events(), count);
  await db.query('DROP TRIGGER test_keep_staged ON audit_staging');
  await failing.sealed();
  assert.deepEqual((await sealedActions()).slice(-2), ['test.before-stuck', 'test.stuck']);
  assert.equal((await new AuditReportService(dataSource).integrity(null, null)).ok, true);
  await failing.close();
});

/** Another data source on the same database, as a second deployment would have: its own pool and staging mode. */
async function ownDataSource(poolSize: number): Promise<DataSource> {
  const own = createDataSource(db.url, { onQuery: () => {}, onError: () => {} }, poolSize);
  return own.initialize();
}

/** Every pooled connection of `source` forgets its prepared statements, as another server connection never had them. */
async function forgetPrepared(source: DataSource, poolSize: number): Promise<void> {
  const runners = Array.from({ length: poolSize }, () => source.createQueryRunner());
  for (const runner of runners) await runner.connect();
  for (const runner of runners) await runner.query('DEALLOCATE ALL');
  for (const runner of runners) await runner.release();
}

test('a connection that lost the prepared statement (a pooler in transaction mode) stages as literals: the change goes through, once', async () => {
  const pooled = await ownDataSource(1);
  const errors: unknown[] = [];
  const audit = new AuditService(pooled, (error) => errors.push(error));
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.prepared' });
  await forgetPrepared(pooled, 1);
  let runs = 0;
  await audit.transaction(async (tx) => {
    runs++;
    await audit.record(tx, SYSTEM_ACTOR, { action: 'test.after-deallocate' });
  });
  assert.equal(runs, 2, 'run again after the EXECUTE failed');
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.literal' }, { waitForSeal: true });
  assert.deepEqual((await sealedActions()).slice(-3), ['test.prepared', 'test.after-deallocate', 'test.literal']);
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /stops using a prepared statement/);
  await audit.close();
  await pooled.destroy();
});

test('changes in flight when the prepared statement goes missing all run again and commit, not only the first to fail', async () => {
  const pooled = await ownDataSource(2);
  const audit = new AuditService(pooled, () => {});
  // Two changes that reach their COMMITs together, each on its own pooled connection.
  const together = () => {
    let arrived = 0;
    let release!: () => void;
    const all = new Promise<void>((resolve) => (release = resolve));
    return async () => {
      if (++arrived === 2) release();
      await all;
    };
  };
  const change = (action: string, meet: () => Promise<void>) =>
    audit.transaction(async (tx) => {
      await tx.query('SELECT 1'); // holds a connection from here to the COMMIT
      await audit.record(tx, SYSTEM_ACTOR, { action });
      await meet();
    });
  const warm = together();
  await Promise.all([change('test.warm-1', warm), change('test.warm-2', warm)]);
  await forgetPrepared(pooled, 2);
  const meet = together();
  const results = await Promise.allSettled([change('test.in-flight-1', meet), change('test.in-flight-2', meet)]);
  assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'fulfilled']);
  await audit.sealed();
  const actions = await sealedActions();
  assert.ok(actions.includes('test.in-flight-1') && actions.includes('test.in-flight-2'));
  await audit.close();
  await pooled.destroy();
});

test('a staged row changed between the seal reading and moving it fails that pass; the next seals it as it now is', async () => {
  await audit.sealed();
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.changed', details: { version: 1 } });
  const errors: unknown[] = [];
  const sealer = new AuditService(dataSource, (error) => errors.push(error));
  // An outside writer changes the row after the seal's first round trip, before its second.
  const driver = dataSource.driver as unknown as { obtainMasterConnection(): Promise<[PoolClient, (error?: unknown) => void]> };
  const obtain = driver.obtainMasterConnection.bind(driver);
  driver.obtainMasterConnection = async () => {
    const [client, release] = await obtain();
    const query = client.query.bind(client) as (text: string) => Promise<unknown>;
    let calls = 0;
    client.query = (async (text: string) => {
      if (++calls === 2) await db.query(`UPDATE audit_staging SET details = '{"version": 2}' WHERE action = 'test.changed'`);
      return query(text);
    }) as unknown as typeof client.query;
    return [client, (error?: unknown) => ((client.query = query as unknown as typeof client.query), release(error))];
  };
  try {
    await sealer.sealed();
  } finally {
    driver.obtainMasterConnection = obtain;
  }
  assert.match(String(errors[0]), /audit seal moved 0 of 1 hashed events/);
  await sealer.sealed();
  const [row] = await db.query<{ details: unknown }>(`SELECT details FROM audit_events WHERE action = 'test.changed'`);
  assert.deepEqual(row!.details, { version: 2 });
  assert.equal((await new AuditReportService(dataSource).integrity(null, null)).ok, true);
  await sealer.close();
});
