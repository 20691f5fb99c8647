import { setImmediate } from 'node:timers/promises';
import type { DataSource, EntityManager } from 'typeorm';
import type { AlertEntity, AuditEventEntity } from '../entities';
import { AuditOutcome } from '../entities/enums';
import type { Actor } from './actor';
import { AlertDetectors, type AlertSettings } from './alert-detectors';
import { AlertRuleService } from './alert-rule.service';
import { AlertSink } from './alert-sink';
import { ALERTS_CHANNEL, AlertService, reviveAlert } from './alert.service';
import type { AuditQueryService } from './audit-query.service';
import { AUDIT_SEALED_CHANNEL, withCommit, type AuditRecord, type AuditService, type ChangeHook } from './audit.service';
import { notifyStatement } from './sql-literal';
import type { KeyVerificationService } from './key-verification.service';
import { LiveFeed, type FeedLimit } from './live-feed';
import type { EventBus } from './event-bus';
import { DetectorGossip } from './detector-gossip';
import type { PgListener } from './pg-listener';

export const ALERT_RULES_CHANNEL = 'keyledger_alert_rules';

/** Live audit tails one instance serves at once, unless MAX_AUDIT_TAILS says otherwise */
export const DEFAULT_MAX_AUDIT_TAILS = 200;
/** Alert subscriptions one instance serves at once, unless MAX_ALERT_SUBSCRIPTIONS says otherwise */
export const DEFAULT_MAX_ALERT_SUBSCRIPTIONS = 2000;

export interface LiveFeedLimits {
  /** MAX_AUDIT_TAILS */
  maxAuditTails?: number;
  /** MAX_ALERT_SUBSCRIPTIONS */
  maxAlertSubscriptions?: number;
}

function halfPerUser(name: string, maxSubscribers: number): FeedLimit {
  return { name, maxSubscribers, maxPerOwner: Math.ceil(maxSubscribers / 2) };
}

/**
 * Alerts end to end: detectors fed by verifications and committed audit records, the sink that
 * deduplicates and raises, rules reloaded on every instance when one changes, and the live feeds
 * that subscriptions read (new alerts and sealed audit events arrive from every instance on the
 * event bus: PostgreSQL NOTIFY, or Redis with REDIS_URL; only committed ones are announced).
 */
export class Alerting {
  readonly alerts: AlertService;
  readonly rules: AlertRuleService;
  readonly sink: AlertSink;
  readonly detectors: AlertDetectors;
  /** Burst and rule hits exchanged with the other instances (none without a bus) */
  readonly gossip: DetectorGossip | null;
  /** Bounded too: each holds a queue, and keys are many though each key's connections are few. */
  readonly alertFeed: LiveFeed<AlertEntity>;
  /** Bounded: a tail's start is itself an event every tail receives, so tails cost the process their square. */
  readonly auditFeed: LiveFeed<AuditEventEntity>;
  private auditDelivery: Promise<void> = Promise.resolve();
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;

  constructor(
    dataSource: DataSource,
    audit: AuditService,
    private readonly auditQueries: AuditQueryService,
    verification: KeyVerificationService,
    settings: AlertSettings,
    private readonly onError: (error: unknown) => void,
    private readonly bus: EventBus | null = null,
    { maxAuditTails = DEFAULT_MAX_AUDIT_TAILS, maxAlertSubscriptions = DEFAULT_MAX_ALERT_SUBSCRIPTIONS }: LiveFeedLimits = {},
  ) {
    // One user may hold half the places, whatever keys: no auditor shuts every other out.
    this.auditFeed = new LiveFeed<AuditEventEntity>(halfPerUser('live audit tails', maxAuditTails));
    this.alertFeed = new LiveFeed<AlertEntity>(halfPerUser('alert subscriptions', maxAlertSubscriptions));
    this.alerts = new AlertService(dataSource, audit, bus);
    this.rules = new AlertRuleService(dataSource, audit, () => this.reloadRules());
    this.sink = new AlertSink(this.alerts, onError);
    this.detectors = new AlertDetectors(settings, (signal) => this.sink.emit(signal), dataSource, onError);
    this.gossip = bus ? new DetectorGossip(bus, onError) : null;
    if (this.gossip) this.detectors.share = this.gossip.share;
    verification.observers.push(this.detectors.onVerification);
    audit.addHook(this.auditHook());
  }

  private auditHook(): ChangeHook {
    return {
      staged: async (tx: EntityManager, record: AuditRecord) => {
        if (record.targetType === 'alert_rule' && (record.outcome ?? AuditOutcome.SUCCESS) === AuditOutcome.SUCCESS) {
          await withCommit(tx, notifyStatement(ALERT_RULES_CHANNEL, ''));
        }
      },
      committed: (record: AuditRecord, actor: Actor) => {
        if (record.targetType === 'api_key' && ['key.create', 'key.update', 'key.rotate'].includes(record.action)) this.detectors.scanSoon();
        if (record.action === 'alert.resolve' && record.details) this.sink.forget(String(record.details.type), String(record.details.subject));
        this.detectors.onAudit(record, actor);
      },
    };
  }

  /**
   * Rule changes (NOTIFY from any instance, or anyone who may NOTIFY) coalesce: one reload at a
   * time, and one more after it for whatever was announced meanwhile.
   */
  reloadRules(): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        try {
          this.detectors.setRules(await this.rules.list());
        } catch (error) {
          this.onError(error);
        }
      } while (this.reloadAgain);
      this.reloading = null;
    })();
    return this.reloading;
  }

  /** Rule changes ride on the database's NOTIFY (sent in the changing transaction); live feeds on the bus. */
  listenOn(listener: PgListener): void {
    listener.on(ALERT_RULES_CHANNEL, () => void this.reloadRules());
    if (!this.bus) return;
    this.gossip?.listen((hit) => this.detectors.ingest(hit));
    this.bus.subscribe(ALERTS_CHANNEL, (payload) => void this.deliverAlert(payload));
    this.bus.subscribe(AUDIT_SEALED_CHANNEL, (payload) => {
      // In seal order, one range at a time, and only when someone is tailing.
      this.auditDelivery = this.auditDelivery.then(() => this.deliverAudit(payload)).catch(this.onError);
    });
  }

  private async deliverAlert(payload: string): Promise<void> {
    try {
      const parsed = JSON.parse(payload) as Record<string, unknown>;
      const alert = 'type' in parsed ? reviveAlert(parsed) : await this.alerts.findById(String(parsed.id));
      if (alert) this.alertFeed.publish(alert);
    } catch (error) {
      this.onError(error);
    }
  }

  private async deliverAudit(payload: string): Promise<void> {
    if (this.auditFeed.size === 0) return;
    const { from, to } = JSON.parse(payload) as { from: string; to: string };
    for (const event of await this.auditQueries.range(from, to)) {
      this.auditFeed.publish(event);
      // Each event's deliveries run before the next is published: HTTP requests (verifications) get their turn.
      await setImmediate();
    }
  }

  async start(): Promise<void> {
    await this.reloadRules();
    this.sink.start();
    this.detectors.start();
  }

  async close(): Promise<void> {
    this.detectors.stop();
    await this.gossip?.flush();
    await this.sink.close();
  }
}
