import 'reflect-metadata';
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { applyRetention } from '../src/services/audit-retention';
import { auditDatabase, type AuditDatabase } from './helpers/audit-database';

/**
 * The link into a gap retention left. In chain order: `imported.first` and `imported.second` (old
 * events imported into the default partition, kept), `kept.lastmonth` (kept by the first run),
 * `old.first` and `old.second` (two months ago: removed), then today's. The kept events before
 * the removed run are what a superuser with the triggers off could delete unseen if only the link
 * out of the gap were checked.
 */

let open: AuditDatabase | null = null;
afterEach(async () => {
  await open?.close();
  open = null;
});

const month = (offset: number) => {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
};

async function chainWithRemovedRun(): Promise<AuditDatabase & { ids: Record<string, string>; afterGap: string }> {
  const database = (open = await auditDatabase());
  const { db, audit } = database;
  await db.query(`SELECT keyledger_audit_partitions($1, $2)`, [month(-2), month(3)]);
  const staged: Array<[Date, string]> = [
    [new Date('2019-01-01T00:00:00Z'), 'imported.first'],
    [new Date('2019-02-01T00:00:00Z'), 'imported.second'],
    [new Date(month(-1).getTime() + 86_400_000), 'kept.lastmonth'],
    [new Date(month(-1).getTime() - 2 * 86_400_000), 'old.first'],
    [new Date(month(-1).getTime() - 86_400_000), 'old.second'],
  ];
  for (const [at, action] of staged) {
    await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ($1, $2, 'SUCCESS', 'SYSTEM')`, [at, action]);
  }
  await audit.seal();
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.now' }, { waitForSeal: true });
  const rows = await db.query<{ id: string; action: string }>('SELECT id::text, action FROM audit_events ORDER BY id');
  const ids = Object.fromEntries(rows.map((r) => [r.action, r.id]));
  const report = await applyRetention(audit, month(-1));
  assert.deepEqual(
    report.anchors.map((a) => [a.firstId, a.lastId]),
    [[ids['old.first'], ids['old.second']]],
    'one removed run, from its first event to its last',
  );
  const whole = await database.reports.integrity(null, null);
  assert.equal(whole.ok, true, JSON.stringify(whole));
  return { ...database, ids, afterGap: ids['test.now']! };
}

const asSuperuser = (database: AuditDatabase, statement: string) =>
  database.db.query(`SET session_replication_role = replica; ${statement}; RESET session_replication_role`);

test('deleting the kept event just before a removed run is reported at the event after the gap', async () => {
  const database = await chainWithRemovedRun();
  await asSuperuser(database, `DELETE FROM audit_events WHERE id = ${database.ids['kept.lastmonth']}`);
  const report = await database.reports.integrity(null, null);
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, database.afterGap);
  assert.match(report.problem!, new RegExp(`removed run \\(from event ${database.ids['old.first']}\\) linked to a hash the log no longer holds`));
  // A range that starts after the gap reaches it too.
  const recent = await database.reports.integrity(new Date(Date.now() - 600_000), null);
  assert.equal(recent.firstInvalidEventId, database.afterGap, JSON.stringify(recent));
});

test("clearing or changing the anchor's entry by hand to hide the deletion leaves the gap unaccounted for", async () => {
  const database = await chainWithRemovedRun();
  const [other] = await database.db.query<{ hash: string }>(`SELECT hash FROM audit_events WHERE id = ${database.ids['imported.second']}`);
  await asSuperuser(database, `DELETE FROM audit_events WHERE id = ${database.ids['kept.lastmonth']}`);
  // Cleared, it looks like an anchor from before entries; pointed at the event now before the run, it matches the log.
  for (const entry of ['first_id = NULL, entry_hash = NULL', `first_id = ${database.ids['old.first']}, entry_hash = '${other!.hash}'`]) {
    await asSuperuser(database, `UPDATE audit_chain_anchors SET ${entry}`);
    const report = await database.reports.integrity(null, null);
    assert.equal(report.ok, false, entry);
    assert.equal(report.firstInvalidEventId, database.afterGap);
    assert.match(report.problem!, /no audit\.retention event accounts for/, entry);
  }
});

test('a later run that removes the event before an earlier gap leaves a chain of gaps that verifies, and checks down to its start', async () => {
  const database = await chainWithRemovedRun();
  // Next month's run drops last month, `kept.lastmonth` included: its gap sits right below the first.
  const second = await applyRetention(database.audit, month(0), { now: new Date(month(1).getTime() + 86_400_000) });
  assert.deepEqual(second.anchors.map((a) => [a.firstId, a.lastId]), [[database.ids['kept.lastmonth'], database.ids['kept.lastmonth']]]);
  assert.equal(second.carriedAnchors.length, 1);
  const intact = await database.reports.integrity(null, null);
  assert.equal(intact.ok, true, JSON.stringify(intact));

  // The event below both gaps goes too: found through the lower gap's entry.
  await asSuperuser(database, `DELETE FROM audit_events WHERE id = ${database.ids['imported.second']}`);
  const report = await database.reports.integrity(null, null);
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, database.afterGap);
  assert.match(report.problem!, new RegExp(`removed run \\(from event ${database.ids['kept.lastmonth']}\\)`));
});
