import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
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
  await assert.rejects(
    audit.transaction(async (tx) => {
      await audit.record(tx, SYSTEM_ACTOR, { action: 'test.rolled-back' });
      await withCommit(tx, 'SELECT 1 / 0'); // fails in the COMMIT's round trip, after the EXECUTE
    }),
    /division by zero/,
  );
  // PREPARE is not undone by the rollback: preparing again on this connection would fail.
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.after-failure' }, { waitForSeal: true });
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.again' }, { waitForSeal: true });
  const actions = await sealedActions();
  assert.ok(!actions.includes('test.rolled-back'), 'the failed change left no event');
  assert.deepEqual(actions.slice(-2), ['test.after-failure', 'test.again']);
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

// Last: it switches this process's audit staging to literals for good.
test('a connection that lost the prepared statement (a pooler in transaction mode) stages as literals: the change goes through, once', async () => {
  const errors: unknown[] = [];
  const pooled = new AuditService(dataSource, (error) => errors.push(error));
  await pooled.recordAlone(SYSTEM_ACTOR, { action: 'test.prepared' });
  // The one pooled connection forgets the statement, as another server connection never had it.
  await dataSource.query('DEALLOCATE keyledger_stage_event');
  let runs = 0;
  await pooled.transaction(async (tx) => {
    runs++;
    await pooled.record(tx, SYSTEM_ACTOR, { action: 'test.after-deallocate' });
  });
  assert.equal(runs, 2, 'run again after the EXECUTE failed');
  await pooled.recordAlone(SYSTEM_ACTOR, { action: 'test.literal' }, { waitForSeal: true });
  assert.deepEqual((await sealedActions()).slice(-3), ['test.prepared', 'test.after-deallocate', 'test.literal']);
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /stops using a prepared statement/);
  await pooled.close();
});
