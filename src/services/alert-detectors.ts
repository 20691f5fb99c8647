import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { DataSource } from 'typeorm';
import type { AlertRuleEntity } from '../entities';
import { AlertMetric, AlertSeverity, AlertType, VerifyCode } from '../entities/enums';
import type { Actor } from './actor';
import type { AlertSignal } from './alert.service';
import type { AuditRecord } from './audit.service';
import type { SharedHit } from './detector-gossip';
import type { VerifyOutcome, VerifyRequest } from './key-verification.service';
import { parseCidr } from './validation';

/** Every detector's knobs; defaults documented in the README (ALERT_* variables). */
export interface AlertSettings {
  /** VERIFY_FAILURE_BURST: failures from one source or against one key within the window */
  failureBurst: { threshold: number; windowSeconds: number };
  /** DENIED_ACTION_BURST: FORBIDDEN answers to one principal within the window */
  deniedBurst: { threshold: number; windowSeconds: number };
  /** REVOKED_KEY_USED, EXPIRED_KEY_USED, RATE_LIMITED: repeats within this fold into one alert */
  dedupSeconds: number;
  /** USAGE_SPIKE: per-bucket calls against an EWMA baseline of the key's own buckets */
  spike: {
    bucketSeconds: number;
    historyBuckets: number;
    floor: number;
    factor: number;
    sigmas: number;
    minCalls: number;
    /** Also above this multiple of the key's own busiest bucket (decaying over peakHalfLifeBuckets) */
    peakFactor: number;
    peakHalfLifeBuckets: number;
  };
  /** NEW_SOURCE_IP: networks are only learned during the key's first seconds */
  newIpLearningSeconds: number;
  /** QUOTA_LOW: warn at this fraction of the refill amount, or at this many left without refill */
  quotaLow: { fraction: number; remaining: number };
  /** KEY_EXPIRING: this many days ahead, scanned every scanSeconds */
  expiring: { days: number; scanSeconds: number };
}

export const DEFAULT_ALERT_SETTINGS: AlertSettings = {
  failureBurst: { threshold: 20, windowSeconds: 60 },
  deniedBurst: { threshold: 5, windowSeconds: 60 },
  dedupSeconds: 3600,
  spike: { bucketSeconds: 60, historyBuckets: 30, floor: 600, factor: 4, sigmas: 6, minCalls: 30, peakFactor: 1.5, peakHalfLifeBuckets: 1440 },
  newIpLearningSeconds: 86_400,
  quotaLow: { fraction: 0.1, remaining: 10 },
  expiring: { days: 7, scanSeconds: 60 },
};

/** Not counted as failures: the key was fine, its limits spoke (they have their own alert types). */
const NOT_FAILURES = new Set([VerifyCode.VALID, VerifyCode.RATE_LIMITED, VerifyCode.USAGE_EXCEEDED]);
const SAMPLE = 10;
/** Refusals one authz.denied event may stand for (details.attempts), however large a count it claims */
const MAX_ATTEMPTS_HEARD = 100;

interface Hit {
  at: number;
  evidence: Record<string, string | null>;
}

/** Recent hits per subject, at most `keep` of them: enough to tell whether a threshold is reached. */
class SlidingWindow {
  private readonly hits = new LRUCache<string, Hit[]>({ max: 100_000 });

  record(subject: string, hit: Hit, windowMs: number, keep: number): Hit[] {
    let list = this.hits.get(subject);
    if (!list) this.hits.set(subject, (list = []));
    list.push(hit);
    while (list.length > 0 && list[0]!.at <= hit.at - windowMs) list.shift();
    if (list.length > keep) list.splice(0, list.length - keep);
    return list;
  }
}

/** Distinct values per evidence field, a few each, with how many hits carried each code. */
function summarise(hits: readonly Hit[]): Record<string, unknown> {
  // No prototype: a field or code named `constructor` is a name like any other.
  const sample = Object.create(null) as Record<string, string[]>;
  const codes = Object.create(null) as Record<string, number>;
  for (const { evidence } of hits) {
    for (const [field, value] of Object.entries(evidence)) {
      if (value === null) continue;
      if (field === 'code') codes[value] = (codes[value] ?? 0) + 1;
      const values = (sample[field] ??= []);
      if (values.length < SAMPLE && !values.includes(value)) values.push(value);
    }
  }
  return { sample, ...(Object.keys(codes).length > 0 ? { codes } : {}) };
}

const networkByIp = new LRUCache<string, { network: string | null }>({ max: 10_000 });

/** The /24 of an IPv4 address or the /64 of an IPv6 one (remembered: callers repeat themselves). */
export function networkOf(ip: string): string | null {
  let known = networkByIp.get(ip);
  if (!known) networkByIp.set(ip, (known = { network: computeNetwork(ip) }));
  return known.network;
}

/** As PostgreSQL's cidr prints it (IPv6 per RFC 5952), so alerts name networks the way filters and key_networks do. */
function computeNetwork(ip: string): string | null {
  const family = isIP(ip);
  return family === 0 ? null : parseCidr(`${ip}/${family === 4 ? 24 : 64}`);
}

interface Rate {
  bucket: number;
  count: number;
  mean: number;
  variance: number;
  buckets: number;
  /** The busiest bucket seen, decaying: what a batch or cron key normally does at its peak */
  peak: number;
  /** The current bucket already alerted: it is not learned as the key's normal peak */
  fired: boolean;
  /** That alert: each later call in the bucket repeats it rather than building another */
  signal: AlertSignal | null;
}

const EWMA_ALPHA = 0.1;

/**
 * The detectors. Verifications and audited actions are fed in synchronously (cheap in-memory
 * windows, bounded by LRU); what crosses a line becomes an AlertSignal for the sink. The windowed
 * ones (bursts and rules) also hand each hit to `share`, and count the hits peers shared
 * (ingest()), so a burst split across instances adds up. Usage baselines stay per instance.
 */
export class AlertDetectors {
  /** Where this instance's windowed hits go for its peers (DetectorGossip); nowhere by default */
  share: (hit: SharedHit, subject: string, keep: number) => void = () => {};
  private readonly windows = new SlidingWindow();
  private readonly rates = new LRUCache<string, Rate>({ max: 100_000 });
  private readonly networks = new LRUCache<string, Set<string>>({ max: 100_000 });
  private readonly quotaWarned = new LRUCache<string, string>({ max: 100_000 });
  private rulesByMetric = new Map<AlertMetric, AlertRuleEntity[]>();
  private expiryTimer: NodeJS.Timeout | null = null;
  private soonTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly settings: AlertSettings,
    private readonly emit: (signal: AlertSignal) => void,
    private readonly dataSource: DataSource,
    private readonly onError: (error: unknown) => void,
  ) {}

  setRules(rules: readonly AlertRuleEntity[]): void {
    const byMetric = new Map<AlertMetric, AlertRuleEntity[]>();
    for (const rule of rules) if (rule.enabled) byMetric.set(rule.metric, [...(byMetric.get(rule.metric) ?? []), rule]);
    this.rulesByMetric = byMetric;
  }

  start(): void {
    const scan = () => void this.scanExpiring().catch(this.onError);
    scan();
    this.expiryTimer = setInterval(scan, this.settings.expiring.scanSeconds * 1000);
    this.expiryTimer.unref();
  }

  stop(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
  }

  /** A key was created or changed: its expiry is looked at within moments, not at the next scan. */
  scanSoon(): void {
    if (this.soonTimer) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      void this.scanExpiring().catch(this.onError);
    }, 200);
    this.soonTimer.unref();
  }

  onVerification = (outcome: VerifyOutcome, request: VerifyRequest, at: number): void => {
    const { code, record } = outcome;
    const ip = request.ip ?? null;
    const failure = !NOT_FAILURES.has(code);
    // The common case (a valid key, no rules) allocates nothing here: this runs on every verification.
    if (failure || this.rulesByMetric.size > 0) {
      const evidence = { code, ip, keyId: record?.id ?? null, resource: request.resource ?? null };
      const keyScope = { keyId: record?.id ?? null, userId: record?.ownerId ?? null };
      this.countRules(AlertMetric.VERIFY_CALLS, keyScope, at, evidence);
      if (code !== VerifyCode.VALID) this.countRules(AlertMetric.VERIFY_FAILURES, keyScope, at, evidence);
      if (code === VerifyCode.RATE_LIMITED) this.countRules(AlertMetric.RATE_LIMITED, keyScope, at, evidence);
      if (failure) {
        // A verifier that does not pass `ip` is itself the source its failures come from (and the evidence says so).
        const source = ip ?? request.callerIp ?? null;
        this.failureBurst(at, source === ip ? evidence : { ...evidence, ip: source }, record?.id ?? null, record?.ownerId ?? null, source, true);
      }
    }
    if (record) {
      this.usageSpike(record.id, record.ownerId, record.name, at);
      const keyUse = (type: AlertType, severity: AlertSeverity, message: string) =>
        this.emit({
          type,
          severity,
          subject: `key:${record.id}`,
          message,
          keyId: record.id,
          userId: record.ownerId,
          details: { windowSeconds: this.settings.dedupSeconds, observed: 1, sample: { ip: ip ? [ip] : [], resource: request.resource ? [request.resource] : [] }, code },
          windowSeconds: this.settings.dedupSeconds,
        });
      if (code === VerifyCode.REVOKED) keyUse(AlertType.REVOKED_KEY_USED, AlertSeverity.HIGH, `Revoked key "${record.name}" was presented`);
      if (code === VerifyCode.EXPIRED) keyUse(AlertType.EXPIRED_KEY_USED, AlertSeverity.LOW, `Expired key "${record.name}" was presented`);
      if (code === VerifyCode.RATE_LIMITED) keyUse(AlertType.RATE_LIMITED, AlertSeverity.LOW, `Key "${record.name}" hit its rate limit`);
      if (code === VerifyCode.VALID) {
        if (outcome.remaining !== null) this.quotaLow(outcome);
        if (ip) this.newSource(record.id, record.ownerId, record.name, record.createdAt, ip, at);
      }
    }
  };

  /** From every committed audit record: denials and authentication failures. */
  onAudit(record: AuditRecord, actor: Actor): void {
    const at = Date.now();
    if (record.action === 'authz.denied') {
      // One event stands for every alias that asked for the refused operation (details.attempts).
      const attempts = Math.min(MAX_ATTEMPTS_HEARD, Math.max(1, Math.trunc(Number(record.details?.attempts ?? 1)) || 1));
      const operation = typeof record.details?.operation === 'string' ? record.details.operation : null;
      for (let i = 0; i < attempts; i++) this.denied(at, { operation, ip: actor.ip, keyId: actor.keyId, userId: actor.userId }, true);
    } else if (record.action === 'auth.failure' && record.details?.repeats === undefined) {
      // A folded count (details.repeats) was heard one rejection at a time already.
      const ownerId = typeof record.details?.ownerId === 'string' ? record.details.ownerId : null;
      const code = typeof record.details?.code === 'string' ? record.details.code : null;
      this.countRules(AlertMetric.AUTH_FAILURES, { keyId: record.targetId ?? null, userId: ownerId }, at, { code, ip: actor.ip, keyId: record.targetId ?? null });
    }
  }

  /** A hit a peer shared, counted as of now (clocks of other machines are not trusted to agree). */
  ingest(hit: SharedHit): void {
    const at = Date.now();
    if (hit.kind === 'failure') this.failureBurst(at, hit.evidence, hit.keyId, hit.ownerId, hit.source, false);
    else if (hit.kind === 'denied') this.denied(at, hit, false);
    else this.countRules(hit.metric, hit, at, hit.evidence, false);
  }

  private denied(at: number, who: { operation: string | null; ip: string | null; keyId: string | null; userId: string | null }, local: boolean): void {
    const { operation, ip, keyId, userId } = who;
    const evidence = { operation, ip, keyId };
    // A peer's denial reaches the rules as a rule hit of its own.
    if (local) this.countRules(AlertMetric.DENIED_ACTIONS, { keyId, userId }, at, evidence);
    const principal = keyId ? `key:${keyId}` : userId ? `user:${userId}` : ip ? `ip:${ip}` : null;
    if (!principal) return;
    const { threshold, windowSeconds } = this.settings.deniedBurst;
    if (local) this.share({ kind: 'denied', operation, ip, keyId, userId }, `denied:${principal}`, threshold);
    const hits = this.windows.record(`denied:${principal}`, { at, evidence }, windowSeconds * 1000, threshold);
    if (hits.length < threshold) return;
    this.emit({
      type: AlertType.DENIED_ACTION_BURST,
      severity: AlertSeverity.HIGH,
      subject: principal,
      message: `A principal was denied ${hits.length} times within ${windowSeconds} s (privilege probing?)`,
      keyId,
      userId,
      details: { windowSeconds, threshold, observed: hits.length, ...summarise(hits) },
      windowSeconds,
    });
  }

  private failureBurst(at: number, evidence: Record<string, string | null>, keyId: string | null, ownerId: string | null, ip: string | null, local: boolean): void {
    const { threshold, windowSeconds } = this.settings.failureBurst;
    if (local && (ip || keyId)) this.share({ kind: 'failure', evidence, keyId, ownerId, source: ip }, `fail:${ip}:${keyId}`, threshold);
    const check = (subject: string, label: string) => {
      const hits = this.windows.record(`fail:${subject}`, { at, evidence }, windowSeconds * 1000, threshold);
      if (hits.length < threshold) return;
      this.emit({
        type: AlertType.VERIFY_FAILURE_BURST,
        severity: AlertSeverity.HIGH,
        subject,
        message: `${hits.length} failed verifications ${label} within ${windowSeconds} s`,
        keyId: subject.startsWith('key:') ? keyId : null,
        userId: subject.startsWith('key:') ? ownerId : null,
        details: { windowSeconds, threshold, observed: hits.length, ...summarise(hits) },
        windowSeconds,
      });
    };
    if (ip) check(`ip:${ip}`, `from ${ip}`);
    if (keyId) check(`key:${keyId}`, 'against one key');
  }

  private usageSpike(keyId: string, ownerId: string, name: string, at: number): void {
    const { bucketSeconds, historyBuckets, floor, factor, sigmas, minCalls, peakFactor, peakHalfLifeBuckets } = this.settings.spike;
    const bucket = Math.floor(at / (bucketSeconds * 1000));
    let rate = this.rates.get(keyId);
    if (!rate) this.rates.set(keyId, (rate = { bucket, count: 0, mean: 0, variance: 0, buckets: 0, peak: 0, fired: false, signal: null }));
    if (bucket !== rate.bucket) {
      // The mean follows the key's typical bucket; the peak remembers its legitimate bursts (a
      // nightly batch, a cron job), which a mean decayed by idle buckets would call spikes.
      const elapsed = bucket - rate.bucket;
      rate.peak = Math.max(rate.peak * 0.5 ** (elapsed / peakHalfLifeBuckets), rate.fired ? 0 : rate.count);
      rate.fired = false;
      rate.signal = null;
      // Close the finished bucket, and count idle buckets since as zero (a few are enough to decay).
      const learn = (x: number) => {
        if (rate!.buckets === 0) rate!.mean = x;
        const diff = x - rate!.mean;
        const increment = EWMA_ALPHA * diff;
        rate!.mean += increment;
        rate!.variance = (1 - EWMA_ALPHA) * (rate!.variance + diff * increment);
        rate!.buckets++;
      };
      learn(rate.count);
      for (let idle = Math.min(bucket - rate.bucket - 1, 50); idle > 0; idle--) learn(0);
      rate.bucket = bucket;
      rate.count = 0;
    }
    rate.count++;
    // A key past its line is being hammered: its calls must not each build an alert.
    if (rate.signal) return this.emit(rate.signal);
    const learned = rate.buckets >= historyBuckets;
    const limit = learned
      ? Math.max(minCalls, rate.mean * factor, rate.mean + sigmas * Math.sqrt(rate.variance), rate.peak * peakFactor)
      : floor;
    if (rate.count < limit) return;
    rate.fired = true;
    rate.signal = {
      type: AlertType.USAGE_SPIKE,
      severity: AlertSeverity.MEDIUM,
      subject: `key:${keyId}`,
      message: `Key "${name}" made ${rate.count} calls in ${bucketSeconds} s, against a baseline of ${rate.mean.toFixed(1)}`,
      keyId,
      userId: ownerId,
      details: {
        windowSeconds: bucketSeconds,
        observed: rate.count,
        baseline: learned
          ? { mean: Number(rate.mean.toFixed(2)), stddev: Number(Math.sqrt(rate.variance).toFixed(2)), peak: Number(rate.peak.toFixed(1)), buckets: rate.buckets }
          : null,
        threshold: Math.ceil(limit),
        staticFloor: learned ? null : floor,
      },
      windowSeconds: bucketSeconds * 5,
    };
    this.emit(rate.signal);
  }

  private quotaLow(outcome: VerifyOutcome): void {
    const record = outcome.record!;
    const remaining = outcome.remaining!;
    const { fraction, remaining: fixedLevel } = this.settings.quotaLow;
    const level = record.refillAmount !== null ? Math.max(1, Math.ceil(record.refillAmount * fraction)) : fixedLevel;
    if (remaining > level) return;
    // Once per refill period: hovering around the level does not repeat the warning. Per quota, not
    // per key: during a rotation's grace the old key draws on its successor's, and the warning names
    // the successor, whose quota it is.
    const period = record.lastRefillAt ? String(record.lastRefillAt.getTime()) : 'once';
    if (this.quotaWarned.get(record.quotaId) === period) return;
    this.quotaWarned.set(record.quotaId, period);
    const windowSeconds = record.refillIntervalSeconds ?? 30 * 86_400;
    this.emit({
      type: AlertType.QUOTA_LOW,
      severity: AlertSeverity.LOW,
      subject: `key:${record.quotaId}:${period}`,
      message: `Key "${record.name}" has ${remaining} verifications left (warning level ${level})`,
      keyId: record.quotaId,
      userId: record.ownerId,
      details: { windowSeconds, observed: remaining, threshold: level, refillAmount: record.refillAmount, refillIntervalSeconds: record.refillIntervalSeconds },
      windowSeconds,
    });
  }

  private newSource(keyId: string, ownerId: string, name: string, createdAt: Date, ip: string, at: number): void {
    const network = networkOf(ip);
    if (!network) return;
    let known = this.networks.get(keyId);
    if (!known) this.networks.set(keyId, (known = new Set()));
    if (known.has(network)) return;
    if (known.size < 1000) known.add(network);
    const learning = at - createdAt.getTime() < this.settings.newIpLearningSeconds * 1000;
    // Remembered in the database so restarts and other instances share what each key has used.
    void this.dataSource
      .query(
        `WITH added AS (INSERT INTO key_networks (key_id, network) VALUES ($1, $2::cidr) ON CONFLICT DO NOTHING RETURNING 1)
         SELECT (SELECT count(*) FROM added)::int AS added,
                (SELECT array_agg(network::text ORDER BY first_seen_at DESC) FROM
                   (SELECT network, first_seen_at FROM key_networks WHERE key_id = $1 AND network <> $2::cidr LIMIT 10) n) AS others`,
        [keyId, network],
      )
      .then((rows: Array<{ added: number; others: string[] | null }>) => {
        const [row] = rows;
        if (learning || !row || row.added === 0 || !row.others || row.others.length === 0) return;
        this.emit({
          type: AlertType.NEW_SOURCE_IP,
          severity: AlertSeverity.MEDIUM,
          subject: `key:${keyId}:${network}`,
          message: `Key "${name}" was used from ${network}, a network it has not used before`,
          keyId,
          userId: ownerId,
          details: { observed: ip, network, knownNetworks: row.others, learningSeconds: this.settings.newIpLearningSeconds },
          windowSeconds: this.settings.dedupSeconds,
        });
      })
      .catch((error: unknown) => {
        known!.delete(network);
        this.onError(error);
      });
  }

  private countRules(metric: AlertMetric, scope: { keyId: string | null; userId: string | null }, at: number, evidence: Record<string, string | null>, local = true): void {
    const rules = this.rulesByMetric.get(metric);
    if (!rules) return;
    let shared = !local;
    for (const rule of rules) {
      if (rule.keyId !== null && rule.keyId !== scope.keyId) continue;
      if (rule.userId !== null && rule.userId !== scope.userId) continue;
      if (!shared) {
        // Once per hit, whatever number of rules it counts for: peers match it against the same rules.
        shared = true;
        const keep = Math.max(...rules.map((r) => r.threshold));
        this.share({ kind: 'rule', metric, keyId: scope.keyId, userId: scope.userId, evidence }, `rule:${metric}:${scope.keyId}:${scope.userId}`, keep);
      }
      const hits = this.windows.record(`rule:${rule.id}`, { at, evidence }, rule.windowSeconds * 1000, rule.threshold);
      if (hits.length < rule.threshold) continue;
      this.emit({
        type: AlertType.THRESHOLD,
        severity: rule.severity,
        subject: `rule:${rule.id}`,
        message: `Rule "${rule.name}": ${metric} reached ${rule.threshold} within ${rule.windowSeconds} s`,
        keyId: rule.keyId,
        userId: rule.userId,
        ruleId: rule.id,
        details: { metric, windowSeconds: rule.windowSeconds, threshold: rule.threshold, observed: hits.length, ...summarise(hits) },
        windowSeconds: rule.windowSeconds,
      });
    }
  }

  /** KEY_EXPIRING: active keys expiring within the configured days, one alert per key and expiry. */
  async scanExpiring(): Promise<void> {
    const rows = (await this.dataSource.query(
      // A rotated key's expiry is the end of the grace its operator chose, not news.
      `SELECT id, name, owner_id, expires_at FROM api_keys k
        WHERE stored_status = 'ACTIVE' AND expires_at > now() AND expires_at <= now() + make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM api_keys s WHERE s.rotated_from_id = k.id)
        ORDER BY expires_at LIMIT 10000`,
      [this.settings.expiring.days],
    )) as Array<{ id: string; name: string; owner_id: string; expires_at: Date }>;
    for (const row of rows) {
      const secondsLeft = Math.max(0, Math.ceil((row.expires_at.getTime() - Date.now()) / 1000));
      this.emit({
        type: AlertType.KEY_EXPIRING,
        severity: secondsLeft < 86_400 ? AlertSeverity.MEDIUM : AlertSeverity.LOW,
        subject: `key:${row.id}:${row.expires_at.getTime()}`,
        message: `Key "${row.name}" expires at ${row.expires_at.toISOString()}`,
        keyId: row.id,
        userId: row.owner_id,
        details: { expiresAt: row.expires_at.toISOString(), secondsLeft, daysAhead: this.settings.expiring.days },
        // At least a minute of deduplication, however soon the key expires.
        windowSeconds: Math.max(60, secondsLeft),
      });
    }
  }
}
