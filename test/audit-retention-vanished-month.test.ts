import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { DataSource } from 'typeorm';
import { applyRetention } from '../src/services/audit-retention';
import { AuditService } from '../src/services/audit.service';
import { auditDatabase, monthPartition, monthStart, sealedEventsAt } from './helpers/audit-database';
import type { TestDatabase } from './helpers/database';

/**
 * A month dropped by someone else between the moment a run lists the old months and the moment its
 * check reads them (a run of an older release, which takes no turn, or a hand): the run does not
 * fail on the missing table; it checks what is left, and removes it only if its chain verifies.
 */

let db: TestDatabase;
let dataSource: DataSource;
let audit: AuditService;
let close: () => Promise<void>;

before(async () => {
  ({ db, dataSource, audit, close } = await auditDatabase());
});
after(() => close());

test('a month dropped while a run is about to check it: the run checks what is left, and removes nothing where the chain no longer verifies', async () => {
  const month = (offset: number) => monthStart(offset);
  await sealedEventsAt({ db, audit }, [month(-3), month(2)], [
    [new Date(month(-3).getTime() + 86_400_000), 'oldest'],
    [new Date(month(-2).getTime() + 86_400_000), 'older'],
  ]);

  // The check's first read of the old months: just before it, the oldest month goes.
  const vanishing = monthPartition(month(-3));
  const query = dataSource.manager.query.bind(dataSource.manager);
  let dropped = false;
  dataSource.manager.query = (async (sql: string, parameters?: unknown[]) => {
    if (!dropped && sql.includes('min(id)::text AS low') && sql.includes(vanishing)) {
      dropped = true;
      await db.query(`ALTER TABLE audit_events DETACH PARTITION ${vanishing}`);
      await db.query(`DROP TABLE ${vanishing}`);
    }
    return query(sql, parameters);
  }) as typeof dataSource.manager.query;
  try {
    // What is left is still checked: here the dropped month took what the next event links to.
    await assert.rejects(applyRetention(audit, month(-1)), /does not verify.*event \d+ does not link/);
    assert.ok(dropped, 'the month went while the run was under way');
  } finally {
    dataSource.manager.query = query;
  }
  const remaining = await db.query<{ action: string }>('SELECT action FROM audit_events ORDER BY id');
  assert.deepEqual(remaining.map((row) => row.action), ['older', 'test.now'], 'nothing was removed with the evidence of the break');
});
