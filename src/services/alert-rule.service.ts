import type { DataSource, EntityManager } from 'typeorm';
import { AlertRuleEntity, ApiKeyEntity, UserEntity } from '../entities';
import type { AlertMetric, AlertSeverity } from '../entities/enums';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { BadInputError } from './errors';
import { lockById } from './transaction';
import { isUuid, requireName } from './validation';

export interface CreateAlertRuleInput {
  name: string;
  metric: AlertMetric;
  threshold: number;
  windowSeconds: number;
  severity: AlertSeverity;
  keyId?: string | null;
  userId?: string | null;
}

export interface UpdateAlertRuleInput {
  name?: string | null;
  threshold?: number | null;
  windowSeconds?: number | null;
  severity?: AlertSeverity | null;
  enabled?: boolean | null;
}

const MAX_WINDOW_SECONDS = 30 * 86_400;
const MAX_THRESHOLD = 1_000_000_000;

function positive(field: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value <= 0 || value > max) throw new BadInputError(field, `${field} must be a whole number from 1 to ${max}`);
  return value;
}

function ruleSnapshot(rule: AlertRuleEntity) {
  const { name, metric, threshold, windowSeconds, severity, keyId, userId, enabled } = rule;
  return { name, metric, threshold, windowSeconds, severity, keyId, userId, enabled };
}

/** Administrator-defined thresholds on counted metrics (alerts:write), every change audited. */
export class AlertRuleService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditService,
    /** Loads the rules into this instance's detectors; a change answers only once it is in force here. */
    private readonly applyRules: () => Promise<void> = async () => {},
  ) {}

  /** A rule change and its audit event, in force on this instance before the mutation answers (others follow the NOTIFY). */
  private async change<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    const result = await this.audit.transaction(work);
    await this.applyRules();
    return result;
  }

  list(): Promise<AlertRuleEntity[]> {
    return this.dataSource.manager.find(AlertRuleEntity, { order: { createdAt: 'ASC', id: 'ASC' } });
  }

  async findById(id: string): Promise<AlertRuleEntity | null> {
    return isUuid(id) ? this.dataSource.manager.findOneBy(AlertRuleEntity, { id }) : null;
  }

  async create(actor: Actor, input: CreateAlertRuleInput): Promise<AlertRuleEntity> {
    const name = requireName('input.name', input.name, 200);
    const threshold = positive('input.threshold', input.threshold, MAX_THRESHOLD);
    const windowSeconds = positive('input.windowSeconds', input.windowSeconds, MAX_WINDOW_SECONDS);
    if (input.keyId && input.userId) throw new BadInputError('input.keyId', 'A rule is scoped to one key, one user, or neither');
    return this.change(async (tx) => {
      await this.assertScopeExists(tx, input.keyId ?? null, input.userId ?? null);
      const now = new Date();
      const rule = tx.create(AlertRuleEntity, {
        name,
        metric: input.metric,
        threshold,
        windowSeconds,
        severity: input.severity,
        keyId: input.keyId ?? null,
        userId: input.userId ?? null,
        enabled: true,
        createdById: actor.userId,
        createdAt: now,
        updatedAt: now,
      });
      await tx.save(AlertRuleEntity, rule);
      await this.audit.record(tx, actor, { action: 'alert_rule.create', targetType: 'alert_rule', targetId: rule.id, details: { after: ruleSnapshot(rule) } });
      return rule;
    });
  }

  async update(actor: Actor, id: string, input: UpdateAlertRuleInput): Promise<AlertRuleEntity> {
    const name = input.name === undefined || input.name === null ? null : requireName('input.name', input.name, 200);
    const threshold = input.threshold === undefined || input.threshold === null ? null : positive('input.threshold', input.threshold, MAX_THRESHOLD);
    const windowSeconds =
      input.windowSeconds === undefined || input.windowSeconds === null ? null : positive('input.windowSeconds', input.windowSeconds, MAX_WINDOW_SECONDS);
    return this.change(async (tx) => {
      const rule = await lockById(tx, AlertRuleEntity, 'AlertRule', id);
      const before = ruleSnapshot(rule);
      if (name !== null) rule.name = name;
      if (threshold !== null) rule.threshold = threshold;
      if (windowSeconds !== null) rule.windowSeconds = windowSeconds;
      if (input.severity) rule.severity = input.severity;
      if (input.enabled !== undefined && input.enabled !== null) rule.enabled = input.enabled;
      rule.updatedAt = new Date();
      await tx.save(AlertRuleEntity, rule);
      await this.audit.record(tx, actor, { action: 'alert_rule.update', targetType: 'alert_rule', targetId: rule.id, details: { before, after: ruleSnapshot(rule) } });
      return rule;
    });
  }

  async delete(actor: Actor, id: string): Promise<boolean> {
    return this.change(async (tx) => {
      const rule = await lockById(tx, AlertRuleEntity, 'AlertRule', id);
      await tx.delete(AlertRuleEntity, { id: rule.id });
      await this.audit.record(tx, actor, { action: 'alert_rule.delete', targetType: 'alert_rule', targetId: rule.id, details: { before: ruleSnapshot(rule) } });
      return true;
    });
  }

  private async assertScopeExists(tx: EntityManager, keyId: string | null, userId: string | null): Promise<void> {
    if (keyId !== null && !(isUuid(keyId) && (await tx.existsBy(ApiKeyEntity, { id: keyId })))) {
      throw new BadInputError('input.keyId', 'input.keyId is not a key');
    }
    if (userId !== null && !(isUuid(userId) && (await tx.existsBy(UserEntity, { id: userId })))) {
      throw new BadInputError('input.userId', 'input.userId is not a user');
    }
  }
}
