import 'reflect-metadata';
import type { DataSource } from 'typeorm';
import { createDataSource, migrate } from '../../src/db/data-source';
import { AuditReportService } from '../../src/services/audit-report.service';
import { AuditService } from '../../src/services/audit.service';
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
