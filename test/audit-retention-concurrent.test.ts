import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { DataSource } from 'typeorm';
import { createDataSource } from '../src/db/data-source';
import { SYSTEM_ACTOR } from '../src/services/actor';
import type { AuditReportService } from '../src/services/audit-report.service';
import { applyRetention } from '../src/services/audit-retention';
import { AuditService } from '../src/services/audit.service';
import { auditDatabase } from './helpers/audit-database';
import type { TestDatabase } from './helpers/database';

/**
 * Retention run by two instances at once (a schedule on each): both runs end without an error,
 * each month is removed once, and the chain verifies after every round.
 */

let db: TestDatabase;
let first: AuditService;
let second: AuditService;
let secondSource: DataSource;
let reports: AuditReportService;
let close: () => Promise<void>;

/** Twelve rounds: the runs' statements interleave differently each time. */
const MONTHS = Array.from({ length: 13 }, (_, i) => `${2023 + Math.floor(i / 12)}-${String((i % 12) + 1).padStart(2, '0')}`);

const partitionOf = (month: string) => `audit_events_${month.replace('-', '_')}`;

before(async () => {
  ({ db, audit: first, reports, close } = await auditDatabase());
  secondSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  await secondSource.initialize();
  second = new AuditService(secondSource);
  await db.query(`SELECT keyledger_audit_partitions('2023-01-01', '2024-03-01')`);
});
after(async () => {
  await first.close();
  await second.close();
  await secondSource.destroy();
  await close();
});

test('two instances running retention at once: both succeed, each month goes once, the chain verifies', async () => {
  for (const month of MONTHS) {
    for (let day = 1; day <= 20; day++) {
      await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ($1, 'old.event', 'SUCCESS', 'SYSTEM')`, [
        `${month}-${String(day).padStart(2, '0')}T12:00:00Z`,
      ]);
    }
  }
  await first.seal();
  await first.recordAlone(SYSTEM_ACTOR, { action: 'test.now' });

  for (let i = 1; i < MONTHS.length; i++) {
    const cutOff = new Date(`${MONTHS[i]}-01T00:00:00Z`);
    // Both write as well, as live instances do, while both remove the month before the cut-off.
    const [a, b] = await Promise.all([
      applyRetention(first, cutOff),
      applyRetention(second, cutOff),
      first.recordAlone(SYSTEM_ACTOR, { action: 'test.during' }),
      second.recordAlone(SYSTEM_ACTOR, { action: 'test.during' }),
    ]);
    const removed = [...a.removedPartitions, ...b.removedPartitions];
    assert.deepEqual(removed, [partitionOf(MONTHS[i - 1]!)], `round ${i}: the month is removed by exactly one run`);
    assert.equal(a.removedEvents + b.removedEvents, 20);
    await first.settled();
    await second.settled();
    const integrity = await reports.integrity(null, null);
    assert.equal(integrity.ok, true, `round ${i}: ${JSON.stringify(integrity)}`);
  }
  const [{ runs }] = await db.query<{ runs: string }>(`SELECT count(*)::text AS runs FROM audit_events WHERE action = 'audit.retention'`);
  assert.equal(Number(runs), 2 * (MONTHS.length - 1), 'every run is in the trail, the one that found nothing too');
});

test('a run whose check reaches a month another run is dropping waits for it, then carries on without that month', async () => {
  await db.query(`SELECT keyledger_audit_partitions('2022-01-01', '2022-03-01')`);
  for (const at of ['2022-01-10', '2022-01-20', '2022-02-10']) {
    await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ($1, 'older.event', 'SUCCESS', 'SYSTEM')`, [`${at}T12:00:00Z`]);
  }
  await first.seal();
  // The first run holds January, detached and dropped, for a second before it commits: its own
  // audit event is slowed down. The second run starts then, and finds January still listed.
  await db.query(`CREATE FUNCTION slow_retention_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.action = 'audit.retention' AND NEW.details->>'before' = '2022-02-01T00:00:00.000Z' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$`);
  await db.query(`CREATE TRIGGER slow_retention_event BEFORE INSERT ON audit_staging FOR EACH ROW EXECUTE FUNCTION slow_retention_event()`);
  try {
    const cutOff = new Date('2022-02-01T00:00:00Z');
    const firstRun = applyRetention(first, cutOff);
    for (let waited = 0; ; waited += 10) {
      const [sleeping] = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()`);
      if (sleeping!.n !== '0') break;
      assert.ok(waited < 10_000, 'the first run reached its audit event');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const [a, b] = await Promise.all([firstRun, applyRetention(second, cutOff)]);
    assert.deepEqual(a.removedPartitions, [partitionOf('2022-01')]);
    assert.deepEqual(b.removedPartitions, [], 'the second run found January gone once it could look');
  } finally {
    await db.query('DROP TRIGGER slow_retention_event ON audit_staging');
    await db.query('DROP FUNCTION slow_retention_event()');
  }
  await first.settled();
  await second.settled();
  const integrity = await reports.integrity(null, null);
  assert.equal(integrity.ok, true, JSON.stringify(integrity));
});
