import { redactKeys } from '../auth/key-format';
import type { DataSource, EntityManager } from 'typeorm';
import { AlertEntity } from '../entities';
import { AlertSeverity, AlertStatus, AlertType, SEVERITY_RANK } from '../entities/enums';
import { SYSTEM_ACTOR, type Actor } from './actor';
import { scrubSecrets, withCommit, type AuditService } from './audit.service';
import { ConflictError } from './errors';
import type { EventBus } from './event-bus';
import { pageByCreation, type Page } from './pagination';
import { lockById, lockUsersFirst } from './transaction';
import { isUuid } from './validation';

/** Something a detector saw that deserves an alert. */
export interface AlertSignal {
  type: AlertType;
  severity: AlertSeverity;
  /** Deduplication key within the type: one open alert per (type, subject) and window */
  subject: string;
  message: string;
  keyId?: string | null;
  userId?: string | null;
  ruleId?: string | null;
  /** Window, observed value, baseline or threshold, and a sample of the evidence */
  details: Record<string, unknown>;
  /** How long repeats fold into the open alert */
  windowSeconds: number;
}

export interface AlertFilter {
  types?: AlertType[] | null;
  minSeverity?: AlertSeverity | null;
  status?: AlertStatus | null;
  keyId?: string | null;
  userId?: string | null;
}

/** New alerts, once committed, to every instance: the payload is the alert itself (or its id when large: NOTIFY's limit). */
export const ALERTS_CHANNEL = 'keyledger_alerts';
const NOTIFY_LIMIT = 7900;

export function alertMatches(alert: AlertEntity, filter: AlertFilter | null | undefined): boolean {
  if (!filter) return true;
  if (filter.types && filter.types.length > 0 && !filter.types.includes(alert.type)) return false;
  if (filter.minSeverity && SEVERITY_RANK[alert.severity] < SEVERITY_RANK[filter.minSeverity]) return false;
  if (filter.status && alert.status !== filter.status) return false;
  if (filter.keyId && alert.keyId !== filter.keyId) return false;
  if (filter.userId && alert.userId !== filter.userId) return false;
  return true;
}

/** An alert as it travels through NOTIFY: dates as ISO strings. */
export function reviveAlert(payload: Record<string, unknown>): AlertEntity {
  const alert = Object.assign(new AlertEntity(), payload);
  for (const field of ['windowEndsAt', 'lastSeenAt', 'createdAt', 'acknowledgedAt', 'resolvedAt'] as const) {
    const value = payload[field];
    (alert as unknown as Record<string, unknown>)[field] = typeof value === 'string' ? new Date(value) : null;
  }
  return alert;
}

/**
 * Alerts: raised by detectors (deduplicated per type and subject while open and inside their
 * window), handled by people. Raising, acknowledging and resolving are audit events.
 */
export class AlertService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditService,
    private readonly bus: EventBus | null = null,
  ) {}

  /**
   * Creates the alert for `repeats` occurrences (the first opens it, the rest are its repeats), or
   * folds them all into the open one for the same type and subject.
   * Returns the alert when it is new, null when it was folded. New alerts are announced to every
   * instance's subscribers once committed.
   */
  async raise(signal: AlertSignal, repeats = 1): Promise<AlertEntity | null> {
    let announcement: string | null = null;
    const raised = await this.audit.transaction(
      async (tx) => {
        // Serialises raisers of one (type, subject) across instances so only one alert opens.
        await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`alert:${signal.type}:${signal.subject}`]);
        if ((await this.addRepeats(tx, signal.type, signal.subject, repeats)) > 0) return null;
        // The alert points at a user and a key: the user first, as every writer takes them.
        await lockUsersFirst(tx, [signal.userId]);
        const now = new Date();
        const alert = tx.create(AlertEntity, {
          type: signal.type,
          severity: signal.severity,
          severityRank: SEVERITY_RANK[signal.severity],
          status: AlertStatus.OPEN,
          subject: signal.subject,
          // Messages quote names (a key's, a rule's); names are blanked when stored, this is the second line.
          message: redactKeys(signal.message),
          keyId: signal.keyId ?? null,
          userId: signal.userId ?? null,
          ruleId: signal.ruleId ?? null,
          // Samples hold client text (resources, operations): blanked as in the audit log.
          details: scrubSecrets(signal.details) ?? {},
          // Occurrences counted before this alert existed (a raise that queued behind another) are repeats.
          repeatCount: repeats - 1,
          windowEndsAt: new Date(now.getTime() + signal.windowSeconds * 1000),
          lastSeenAt: now,
          createdAt: now,
          acknowledgedAt: null,
          acknowledgedById: null,
          resolvedAt: null,
          resolvedById: null,
        });
        await tx.save(AlertEntity, alert);
        await this.audit.record(tx, SYSTEM_ACTOR, {
          action: 'alert.raised',
          targetType: 'alert',
          targetId: alert.id,
          details: { type: alert.type, severity: alert.severity, subject: alert.subject, keyId: alert.keyId, userId: alert.userId, ruleId: alert.ruleId, message: alert.message },
        });
        const full = JSON.stringify(alert);
        announcement = Buffer.byteLength(full) <= NOTIFY_LIMIT ? full : JSON.stringify({ id: alert.id });
        const notify = this.bus?.statement(ALERTS_CHANNEL, announcement);
        if (notify) await withCommit(tx, notify);
        return alert;
      },
    );
    if (announcement) this.bus?.committed(ALERTS_CHANNEL, announcement);
    return raised;
  }

  /** Counts repeats into the open alert of this type and subject; 0 when there is none any more. */
  async addRepeats(tx: EntityManager | null, type: AlertType, subject: string, repeats: number): Promise<number> {
    const [, updated] = (await (tx ?? this.dataSource.manager).query(
      `UPDATE alerts SET repeat_count = repeat_count + $3, last_seen_at = date_trunc('milliseconds', now())
        WHERE id = (SELECT id FROM alerts WHERE type = $1 AND subject = $2 AND status <> 'RESOLVED' AND window_ends_at > now()
                    ORDER BY created_at DESC LIMIT 1)`,
      [type, subject, repeats],
    )) as [unknown, number];
    return updated;
  }

  async findById(id: string): Promise<AlertEntity | null> {
    return isUuid(id) ? this.dataSource.manager.findOneBy(AlertEntity, { id }) : null;
  }

  async list(filter: AlertFilter | null | undefined, first: number | null | undefined, after: string | null | undefined): Promise<Page<AlertEntity>> {
    const query = this.dataSource.manager.createQueryBuilder(AlertEntity, 'a');
    if (filter?.types && filter.types.length > 0) query.andWhere('a.type = ANY(:types)', { types: filter.types });
    if (filter?.minSeverity) query.andWhere('a.severity_rank >= :rank', { rank: SEVERITY_RANK[filter.minSeverity] });
    if (filter?.status) query.andWhere('a.status = :status', { status: filter.status });
    for (const field of ['keyId', 'userId'] as const) {
      const value = filter?.[field];
      if (value === null || value === undefined) continue;
      if (!isUuid(value)) query.andWhere('false');
      else query.andWhere(`a.${field === 'keyId' ? 'key_id' : 'user_id'} = :${field}`, { [field]: value });
    }
    return pageByCreation(query, 'a', first, after);
  }

  acknowledge(actor: Actor, id: string): Promise<AlertEntity> {
    return this.transition(actor, id, 'alert.acknowledge', (alert) => {
      if (alert.status !== AlertStatus.OPEN) throw new ConflictError(`The alert is ${alert.status.toLowerCase()}; only an open alert can be acknowledged`);
      alert.status = AlertStatus.ACKNOWLEDGED;
      alert.acknowledgedAt = new Date();
      alert.acknowledgedById = actor.userId;
    });
  }

  resolve(actor: Actor, id: string): Promise<AlertEntity> {
    return this.transition(actor, id, 'alert.resolve', (alert) => {
      if (alert.status === AlertStatus.RESOLVED) throw new ConflictError('The alert is already resolved');
      alert.status = AlertStatus.RESOLVED;
      alert.resolvedAt = new Date();
      alert.resolvedById = actor.userId;
    });
  }

  private async transition(actor: Actor, id: string, action: string, change: (alert: AlertEntity) => void): Promise<AlertEntity> {
    return this.audit.transaction(async (tx) => {
      const alert = await lockById(tx, AlertEntity, 'Alert', id);
      const before = alert.status;
      change(alert);
      await tx.save(AlertEntity, alert);
      await this.audit.record(tx, actor, {
        action,
        targetType: 'alert',
        targetId: alert.id,
        details: { type: alert.type, subject: alert.subject, before, after: alert.status },
      });
      return alert;
    });
  }
}
