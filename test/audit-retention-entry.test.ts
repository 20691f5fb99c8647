import 'reflect-metadata';
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { AuditEventEntity } from '../src/entities';
import { ActorType, AuditOutcome } from '../src/entities/enums';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { eventHash } from '../src/services/audit.service';
import { AuditChainBrokenError, applyRetention } from '../src/services/audit-retention';
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

/** The chain above, sealed, before any retention run; ids by action. */
async function chainBeforeRetention(): Promise<AuditDatabase & { ids: Record<string, string> }> {
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
  return { ...database, ids: Object.fromEntries(rows.map((r) => [r.action, r.id])) };
}

async function chainWithRemovedRun(): Promise<AuditDatabase & { ids: Record<string, string>; afterGap: string }> {
  const database = await chainBeforeRetention();
  const { ids } = database;
  const report = await applyRetention(database.audit, month(-1));
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

test('an event forged into the ids of a removed run, linked and counted as if it belonged, is reported', async () => {
  const database = await chainWithRemovedRun();
  const [before] = await database.db.query<{ hash: string }>(`SELECT hash FROM audit_events WHERE id = ${database.ids['kept.lastmonth']}`);
  const forged = Object.assign(new AuditEventEntity(), {
    id: database.ids['old.first']!,
    occurredAt: new Date('2019-03-01T00:00:00Z'),
    action: 'forged.grant',
    outcome: AuditOutcome.SUCCESS,
    actorType: ActorType.SYSTEM,
    actorId: null,
    actorKeyId: null,
    targetType: null,
    targetId: null,
    ip: null,
    userAgent: null,
    requestId: null,
    details: {},
    prevHash: before!.hash,
  });
  await asSuperuser(
    database,
    `INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, details, prev_hash, hash)
       VALUES (${forged.id}, '2019-03-01T00:00:00Z', 'forged.grant', 'SUCCESS', 'SYSTEM', '{}', '${forged.prevHash}', '${eventHash(forged)}');
     INSERT INTO audit_counts_hourly (hour, action, outcome, target_type, count) VALUES ('2019-03-01T00:00:00Z', 'forged.grant', 'SUCCESS', NULL, 1);
     INSERT INTO audit_counts_daily (day, action, outcome, target_type, count) VALUES ('2019-03-01T00:00:00Z', 'forged.grant', 'SUCCESS', NULL, 1)`,
  );
  for (const from of [null, new Date(Date.now() - 600_000)]) {
    const report = await database.reports.integrity(from, null);
    assert.equal(report.ok, false, JSON.stringify(report));
    assert.equal(report.firstInvalidEventId, forged.id);
    assert.match(report.problem!, /among the events retention removed/);
  }
});

test('retention refuses to remove events whose chain does not verify: removed, they would take the evidence of a change with them', async () => {
  const database = await chainBeforeRetention();
  const { ids } = database;
  // The kept event before the run deleted, and the run's first event relinked over it.
  await asSuperuser(
    database,
    `DELETE FROM audit_events WHERE id = ${ids['kept.lastmonth']};
     UPDATE audit_events SET prev_hash = (SELECT hash FROM audit_events WHERE id = ${ids['imported.second']}) WHERE id = ${ids['old.first']}`,
  );
  for (const dryRun of [true, false]) {
    await assert.rejects(applyRetention(database.audit, month(-1), { dryRun }), (error) => error instanceof AuditChainBrokenError && error.message.includes(`event ${ids['old.first']}`));
  }
  assert.equal((await database.db.query(`SELECT 1 FROM audit_events WHERE id = ${ids['old.first']}`)).length, 1, 'nothing was removed');
  const report = await database.reports.integrity(null, null);
  assert.equal(report.firstInvalidEventId, ids['old.first']);
});
