import type { DataSource } from 'typeorm';
import { AuditQueryService } from './audit-query.service';
import { AuditService } from './audit.service';
import { KeyVerificationService } from './key-verification.service';
import { KeyService } from './key.service';
import { RoleService } from './role.service';
import { UserService } from './user.service';

export interface ServiceSettings {
  keyPepper: string;
  keyPrefix: string;
}

export function createServices(dataSource: DataSource, settings: ServiceSettings) {
  const audit = new AuditService(dataSource);
  return {
    audit,
    users: new UserService(dataSource, audit),
    roles: new RoleService(dataSource, audit),
    keys: new KeyService(dataSource, audit, settings.keyPepper, settings.keyPrefix),
    auditQueries: new AuditQueryService(dataSource),
    verification: new KeyVerificationService(dataSource, settings.keyPepper),
  };
}

export type Services = ReturnType<typeof createServices>;
