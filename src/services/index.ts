import type { DataSource } from 'typeorm';
import { AuditExportService } from './audit-export.service';
import { AuditQueryService } from './audit-query.service';
import { AuditReportService } from './audit-report.service';
import { AuditService } from './audit.service';
import { KeyVerificationService } from './key-verification.service';
import { KeyLifecycleService } from './key-lifecycle.service';
import { KeyQueryService } from './key-query.service';
import { KeyService } from './key.service';
import { KeyRateLimiter } from './rate-limiter';
import { UsageService } from './usage.service';
import { RoleService } from './role.service';
import { UserService } from './user.service';

export interface ServiceSettings {
  keyPepper: string;
  keyPrefix: string;
  onBackgroundError?: (error: unknown) => void;
}

export function createServices(dataSource: DataSource, settings: ServiceSettings) {
  const audit = new AuditService(dataSource, settings.onBackgroundError);
  const usage = new UsageService(dataSource, settings.onBackgroundError);
  const keys = new KeyService(audit, settings.keyPepper, settings.keyPrefix);
  return {
    audit,
    usage,
    keys,
    keyLifecycle: new KeyLifecycleService(audit, keys),
    keyQueries: new KeyQueryService(dataSource),
    users: new UserService(dataSource, audit),
    roles: new RoleService(dataSource, audit),
    auditQueries: new AuditQueryService(dataSource),
    auditReports: new AuditReportService(dataSource),
    auditExport: new AuditExportService(dataSource),
    verification: new KeyVerificationService(dataSource, settings.keyPepper, new KeyRateLimiter(), usage),
  };
}

export type Services = ReturnType<typeof createServices>;
