import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { AuditReportService } from '../src/services/audit-report.service';
import { applyRetention } from '../src/services/audit-retention';
import { AuditService } from '../src/services/audit.service';
import { auditDatabase, monthStart, sealedEventsAt } from './helpers/audit-database';
import type { TestDatabase } from './helpers/database';
import type { DataSource } from 'typeorm';

/**
 * A retention run whose own event was committed but never sealed (its instance stopped between
 * the two): the next run seals what is committed before it checks the chain, so the earlier
 * run's event is there to account for the gap it left, and the next run goes ahead.
 */

/** An instance that stops after each commit, before any seal. */
class StoppingBeforeSeal extends AuditService {
  override async seal(): Promise<number> {
    return 0;
  }
  override sealed(): Promise<void> {
    return Promise.resolve();
  }
}

let db: TestDatabase;
let dataSource: DataSource;
let audit: AuditService;
let reports: AuditReportService;
let close: () => Promise<void>;

before(async () => {
  ({ db, dataSource, audit, reports, close } = await auditDatabase());
});
after(() => close());

test("a run seals the earlier run's committed event before it checks the gap that event accounts for", async () => {
  const month = (offset: number) => monthStart(offset);
  await sealedEventsAt({ db, audit }, [month(-2), month(3)], [
    [new Date(month(-1).getTime() - 86_400_000), 'old.first'],
    [new Date('2019-01-01T00:00:00Z'), 'imported'],
    [new Date(month(-1).getTime() + 86_400_000), 'old.second'],
  ]);

  const first = await applyRetention(new StoppingBeforeSeal(dataSource), month(-1));
  assert.equal(first.anchors.length, 1, 'old.first is removed, and the imported event after it links to its anchor');
  const staged = await db.query<{ action: string }>('SELECT action FROM audit_staging');
  assert.deepEqual(staged.map((row) => row.action), ['audit.retention'], 'the first run committed its event, unsealed');

  // The next run (three months on) checks the events it removes, the imported one's link over the gap included.
  const second = await applyRetention(audit, month(2), { now: new Date(month(3).getTime() + 86_400_000) });
  assert.deepEqual(second.carriedAnchors, first.anchors, 'the first run, sealed now, names its anchor');
  const report = await reports.integrity(null, null);
  assert.equal(report.ok, true, JSON.stringify(report));
});
