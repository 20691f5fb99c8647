import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { AuditExportService } from './audit-export.service';
import { AuditQueryService } from './audit-query.service';
import { AuditReportService } from './audit-report.service';
import { AuditService } from './audit.service';
import { AuthFailureFolding } from './auth-failure-folding';
import { DEFAULT_ALERT_SETTINGS, type AlertSettings } from './alert-detectors';
import { Alerting, type LiveFeedLimits } from './alerting';
import type { EventBus } from './event-bus';
import { KeyCache } from './key-cache';
import { KeyChangeFeed } from './key-change-feed';
import { KeyVerificationService, type KeyRecord } from './key-verification.service';
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
  /** Key records cached for verification; 0 turns the cache off */
  keyCacheSize?: number;
  /** Detector settings; the documented defaults when absent */
  alerts?: AlertSettings;
  /** Announces new alerts and sealed audit events to every instance; none: nobody hears them live */
  bus?: EventBus | null;
  /** Live subscriptions this instance serves at once (MAX_AUDIT_TAILS, MAX_ALERT_SUBSCRIPTIONS) */
  liveFeedLimits?: LiveFeedLimits;
  /** Shared rate-limit windows across instances; in-process without */
  redis?: Redis | null;
  /** Names this deployment's rate-limit windows in Redis (`keyledger:<deployment id>:rl:`) */
  rateLimitKeyPrefix?: string;
  onBackgroundError?: (error: unknown) => void;
}

export function createServices(dataSource: DataSource, settings: ServiceSettings) {
  const keyCache = new KeyCache<KeyRecord>({ maxEntries: settings.keyCacheSize ?? 100_000 });
  const keyChanges = new KeyChangeFeed(keyCache);
  const audit = new AuditService(dataSource, settings.onBackgroundError, [keyChanges], settings.bus ?? null);
  const usage = new UsageService(dataSource, settings.onBackgroundError);
  const keys = new KeyService(audit, settings.keyPepper, settings.keyPrefix);
  const auditQueries = new AuditQueryService(dataSource);
  const verification = new KeyVerificationService(dataSource, settings.keyPepper, new KeyRateLimiter(settings.redis ?? null, settings.rateLimitKeyPrefix), usage, keyCache);
  const alerting = new Alerting(
    dataSource,
    audit,
    auditQueries,
    verification,
    settings.alerts ?? DEFAULT_ALERT_SETTINGS,
    settings.onBackgroundError ?? (() => {}),
    settings.bus ?? null,
    settings.liveFeedLimits,
  );
  return {
    audit,
    authFailures: new AuthFailureFolding(audit, settings.onBackgroundError ?? (() => {})),
    usage,
    keyChanges,
    keys,
    keyLifecycle: new KeyLifecycleService(audit, keys),
    keyQueries: new KeyQueryService(dataSource),
    users: new UserService(dataSource, audit),
    roles: new RoleService(dataSource, audit),
    auditQueries,
    alerting,
    auditReports: new AuditReportService(dataSource),
    auditExport: new AuditExportService(dataSource),
    verification,
  };
}

export type Services = ReturnType<typeof createServices>;
