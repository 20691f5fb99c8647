import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createDataSource } from '../src/db/data-source';
import { SYSTEM_ACTOR } from '../src/services/actor';
import type { AuditReportService } from '../src/services/audit-report.service';
import { applyRetention } from '../src/services/audit-retention';
import { AuditService } from '../src/services/audit.service';
import { auditDatabase } from './helpers/audit-database';
import type { TestDatabase } from './helpers/database';

/** Retention (src/services/audit-retention.ts, `keyledger audit-retention`) on a real database. */

let db: TestDatabase;
let audit: AuditService;
let reports: AuditReportService;

let close: () => Promise<void>;

before(async () => {
  ({ db, audit, reports, close } = await auditDatabase());
  await db.query(`SELECT keyledger_audit_partitions('2024-01-01', '2024-04-01')`);
});
after(() => close());

async function stageAt(occurredAt: string, action: string): Promise<void> {
  await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ($1, $2, 'SUCCESS', 'SYSTEM')`, [occurredAt, action]);
}

const exists = async (name: string) => (await db.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [name]))[0]!.oid !== null;
const eventCount = async () => Number((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_events'))[0]!.n);

test('old months are dropped whole; what remains still verifies from an anchor, and the removal is audited', async () => {
  for (const [at, action] of [['2024-01-10', 'old.jan'], ['2024-01-20', 'old.jan'], ['2024-02-05', 'old.feb'], ['2024-02-25', 'old.feb'], ['2024-03-05', 'old.mar']]) {
    await stageAt(`${at}T12:00:00Z`, action!);
  }
  await audit.seal();
  for (let i = 0; i < 3; i++) await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.now' });
  const [lastFeb] = await db.query<{ id: string; hash: string }>(`SELECT id::text, hash FROM audit_events WHERE action = 'old.feb' ORDER BY id DESC LIMIT 1`);
  const [firstJan] = await db.query<{ id: string; prev_hash: string }>(`SELECT id::text, prev_hash FROM audit_events WHERE action = 'old.jan' ORDER BY id LIMIT 1`);

  const dry = await applyRetention(audit, new Date('2024-03-01T00:00:00Z'), { dryRun: true });
  assert.deepEqual(dry.removedPartitions, ['audit_events_2024_01', 'audit_events_2024_02']);
  assert.ok(await exists('audit_events_2024_01'), 'a dry run removes nothing');

  // A cut-off inside March drops only the months wholly before it.
  const report = await applyRetention(audit, new Date('2024-03-15T00:00:00Z'));
  await audit.settled(); // the retention event is committed; its seal follows within 50 ms
  assert.deepEqual(report.removedPartitions, ['audit_events_2024_01', 'audit_events_2024_02']);
  assert.equal(report.removedEvents, 4);
  assert.deepEqual(
    report.anchors,
    [{ lastId: lastFeb!.id, hash: lastFeb!.hash, firstId: firstJan!.id, entryHash: firstJan!.prev_hash }],
    'March links to the last removed event; the removed run began at the first',
  );
  assert.equal(await exists('audit_events_2024_01'), false);
  assert.equal(await exists('audit_events_2024_02'), false);
  assert.ok(await exists('audit_events_2024_03'), 'March is younger than the cut-off and stays');

  const integrity = await reports.integrity(null, null);
  assert.equal(integrity.ok, true, JSON.stringify(integrity));
  assert.equal(integrity.checkedEvents, await eventCount(), 'every remaining event was checked');
  const [event] = await db.query<{ details: { removedEvents: number; anchors: Array<{ lastId: string }> } }>(`SELECT details FROM audit_events WHERE action = 'audit.retention'`);
  assert.equal(event!.details.removedEvents, 4);
  assert.equal(event!.details.anchors[0]!.lastId, lastFeb!.id);
  for (const [table, column] of [['audit_counts_hourly', 'hour'], ['audit_counts_daily', 'day']]) {
    const rolled = await db.query<{ action: string; count: string }>(
      `SELECT action, sum(count)::text AS count FROM ${table} WHERE ${column} < '2024-04-01' GROUP BY 1 ORDER BY 1`,
    );
    assert.deepEqual(rolled, [{ action: 'old.mar', count: '1' }], `${table} forgets the removed months and keeps March`);
  }
});

test('anchors are append-only; one forged with the triggers off is reported at the first kept event', async () => {
  for (const statement of [`UPDATE audit_chain_anchors SET hash = repeat('f', 64)`, 'DELETE FROM audit_chain_anchors', 'TRUNCATE audit_chain_anchors']) {
    await assert.rejects(db.query(statement), /audit_chain_anchors is append-only/);
  }
  const [first] = await db.query<{ id: string }>('SELECT id::text FROM audit_events ORDER BY id LIMIT 1');
  const [anchor] = await db.query<{ hash: string }>('SELECT hash FROM audit_chain_anchors');
  const asSuperuser = (statement: string) => db.query(`SET session_replication_role = replica; ${statement}; RESET session_replication_role`);
  await asSuperuser(`UPDATE audit_chain_anchors SET hash = repeat('f', 64)`);
  try {
    const integrity = await reports.integrity(null, null);
    assert.equal(integrity.ok, false);
    assert.equal(integrity.firstInvalidEventId, first!.id);
  } finally {
    await asSuperuser(`UPDATE audit_chain_anchors SET hash = '${anchor!.hash}'`);
  }
  assert.equal((await reports.integrity(null, null)).ok, true);
});

test('a month whose events sit among kept ones in the chain is removed with an anchor at every crossing', async () => {
  // Sealed after today's events (a late commit, a skewed clock): March now spans the chain.
  await stageAt('2024-03-20T12:00:00Z', 'late.mar');
  await audit.seal();
  const [early] = await db.query<{ id: string; hash: string; prev_hash: string }>(`SELECT id::text, hash, prev_hash FROM audit_events WHERE action = 'old.mar'`);
  const [late] = await db.query<{ id: string; hash: string; prev_hash: string }>(`SELECT id::text, hash, prev_hash FROM audit_events WHERE action = 'late.mar'`);
  const report = await applyRetention(audit, new Date('2024-04-01T00:00:00Z'));
  await audit.settled();
  assert.deepEqual(report.removedPartitions, ['audit_events_2024_03']);
  assert.equal(report.removedEvents, 2);
  assert.deepEqual(report.anchors, [
    { lastId: early!.id, hash: early!.hash, firstId: early!.id, entryHash: early!.prev_hash },
    { lastId: late!.id, hash: late!.hash, firstId: late!.id, entryHash: late!.prev_hash },
  ], 'the early event is followed by a kept one; the late one was the head; each is a run of one');
  assert.equal(await exists('audit_events_2024_03'), false);
  const integrity = await reports.integrity(null, null);
  assert.equal(integrity.ok, true, JSON.stringify(integrity));
  assert.equal(integrity.checkedEvents, await eventCount());
  // And the chain goes on from there.
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.after' });
  assert.equal((await reports.integrity(null, null)).ok, true);
});

test('a cut-off later than the start of this month is refused: this month and later are never dropped', async () => {
  const next = new Date();
  next.setUTCMonth(next.getUTCMonth() + 1, 1);
  await assert.rejects(applyRetention(audit, next), /current month/);
  await assert.rejects(applyRetention(audit, new Date('2207-01-01T00:00:00Z')), /current month/);
  const partitions = await db.query(`SELECT 1 FROM pg_inherits WHERE inhparent = 'audit_events'::regclass`);
  assert.ok(partitions.length >= 5, 'nothing was dropped');
});

test('closing the audit service seals what was committed without waiting, and leaves no timer behind', async () => {
  const errors: unknown[] = [];
  const own = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  await own.initialize();
  const service = new AuditService(own, (error) => errors.push(error));
  await service.recordAlone(SYSTEM_ACTOR, { action: 'test.closing' }, { waitForSeal: false });
  await service.close();
  await own.destroy();
  await new Promise((resolve) => setTimeout(resolve, 100)); // past the 50 ms seal delay
  assert.deepEqual(errors, [], 'no seal ran on the closed connection pool');
  assert.equal((await db.query(`SELECT 1 FROM audit_events WHERE action = 'test.closing'`)).length, 1, 'sealed by close()');
  assert.equal((await db.query('SELECT 1 FROM audit_staging')).length, 0, 'nothing left in staging');
});

test('the retention command refuses a date that does not exist, a bare number and a repeated --before, before touching anything', async () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(__dirname, '..', 'src', 'cli', 'keyledger.js'), 'audit-retention', ...args], {
        env: { PATH: process.env.PATH ?? '' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += String(chunk)));
      child.once('exit', (code) => resolve({ code, stderr }));
    });
  for (const args of [['--before', '2020-02-30'], ['--before', '1'], ['--before', '2025-01-01', '--before', '2020-01-01'], ['--before']]) {
    const { code, stderr } = await run(args);
    assert.equal(code, 2, `${args.join(' ')}: ${stderr}`);
    assert.equal(stderr.trim().split('\n').length, 1, `one line: ${stderr}`);
    assert.match(stderr, /--before/);
  }
});

test('a run with nothing old enough removes nothing and is still audited; a dry run writes nothing', async () => {
  const retentionEvents = async () =>
    Number((await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM audit_events WHERE action = 'audit.retention' AND details->>'before' = '2000-01-01T00:00:00.000Z'`))[0]!.n);
  const dry = await applyRetention(audit, new Date('2000-01-01T00:00:00Z'), { dryRun: true });
  await audit.settled();
  assert.deepEqual(dry, { removedPartitions: [], removedEvents: 0, anchors: [], carriedAnchors: [] });
  assert.equal(await retentionEvents(), 0, 'a dry run records nothing');
  const report = await applyRetention(audit, new Date('2000-01-01T00:00:00Z'));
  await audit.settled();
  assert.deepEqual(report, { removedPartitions: [], removedEvents: 0, anchors: [], carriedAnchors: [] });
  assert.equal(await retentionEvents(), 1, 'the run is in the trail');
});
