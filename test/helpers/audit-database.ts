import 'reflect-metadata';
import type { DataSource } from 'typeorm';
import { createDataSource, migrate } from '../../src/db/data-source';
import { AuditReportService } from '../../src/services/audit-report.service';
import { AuditService } from '../../src/services/audit.service';
import { SYSTEM_ACTOR } from '../../src/services/actor';
import { createTestDatabase, type TestDatabase } from './database';

export interface AuditDatabase {
  db: TestDatabase;
  dataSource: DataSource;
  audit: AuditService;
  reports: AuditReportService;
  close(): Promise<void>;
}

/** A fresh, migrated database with the audit services on it, no server: for retention and the chain. */
export async function auditDatabase(): Promise<AuditDatabase> {
  const db = await createTestDatabase();
  const dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  await dataSource.initialize();
  await migrate(dataSource);
  return {
    db,
    dataSource,
    audit: new AuditService(dataSource),
    reports: new AuditReportService(dataSource),
    close: async () => {
      await dataSource.destroy();
      await db.drop();
    },
  };
}

/** The first instant of the UTC month `offset` months from now. */
export function monthStart(offset: number, now = new Date()): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
}

/** The name of the monthly audit partition holding `date`. */
export function monthPartition(date: Date): string {
  return `audit_events_${date.getUTCFullYear()}_${String(date.getUTCMonth() + 1).padStart(2, '0')}`;
}

/**
 * A log for retention to cut: partitions for `months` (from, to), `events` (time, action) staged and
 * sealed in that order, then one event of now (`test.now`).
 */
export async function sealedEventsAt(
  { db, audit }: Pick<AuditDatabase, 'db' | 'audit'>,
  months: readonly [Date, Date],
  events: ReadonlyArray<readonly [Date, string]>,
): Promise<void> {
  await db.query(`SELECT keyledger_audit_partitions($1, $2)`, [...months]);
  for (const [at, action] of events) {
    await db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ($1, $2, 'SUCCESS', 'SYSTEM')`, [at, action]);
  }
  await audit.seal();
  await audit.recordAlone(SYSTEM_ACTOR, { action: 'test.now' }, { waitForSeal: true });
}
