import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { AuditReportService } from '../src/services/audit-report.service';
import { applyRetention } from '../src/services/audit-retention';
import type { AuditService } from '../src/services/audit.service';
import { auditDatabase, monthStart, sealedEventsAt } from './helpers/audit-database';
import type { TestDatabase } from './helpers/database';

/**
 * Retention twice, the second dropping the month that holds the first run's own event: the anchor
 * that first run made is still needed (an event imported into the default partition links to it),
 * so the second run names it again and the chain still verifies.
 */

let db: TestDatabase;
let audit: AuditService;
let reports: AuditReportService;
let close: () => Promise<void>;

before(async () => {
  ({ db, audit, reports, close } = await auditDatabase());
});
after(() => close());

test("a later run that drops an earlier run's event names that run's anchors again", async () => {
  const month = (offset: number) => monthStart(offset);
  // Two months ago; one imported long ago (the default partition); last month; then this month's.
  await sealedEventsAt({ db, audit }, [month(-2), month(3)], [
    [new Date(month(-1).getTime() - 86_400_000), 'old.first'],
    [new Date('2019-01-01T00:00:00Z'), 'imported'],
    [new Date(month(-1).getTime() + 86_400_000), 'old.second'],
  ]);

  const first = await applyRetention(audit, month(-1));
  assert.equal(first.anchors.length, 1, 'the first event is followed by the imported one, which is kept');
  assert.equal((await reports.integrity(null, null)).ok, true);

  // Three months on, everything but the imported event is old enough, the first run's event included.
  const second = await applyRetention(audit, month(2), { now: new Date(month(3).getTime() + 86_400_000) });
  assert.deepEqual(second.carriedAnchors, first.anchors);
  const remaining = await db.query<{ action: string }>('SELECT action FROM audit_events ORDER BY id');
  assert.deepEqual(remaining.map((r) => r.action), ['imported', 'audit.retention']);
  const report = await reports.integrity(null, null);
  assert.equal(report.ok, true, JSON.stringify(report));
});
