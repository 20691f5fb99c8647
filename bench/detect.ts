/**
 * How well the alert detectors tell incidents from ordinary traffic. A synthetic trace (a few
 * hundred keys with a daily rhythm, correlated noise, organic surges, scheduled jobs, occasional
 * failed verifications and one or two networks each, plus injected incidents of every AlertType
 * at known times and subjects) is replayed over HTTP through the real server; the alerts it
 * raised are matched to the incidents and precision and recall printed per type (target >= 0.95).
 * Usage: npm run bench:detect
 *   (DATABASE_URL or embedded PostgreSQL; SEED, KEYS, TRAFFIC_SECONDS, CRON_KEYS, BATCH_KEYS)
 *
 * Time is compressed so a run takes about three minutes: a spike bucket is one second (per-key
 * counts per bucket are then what a real minute holds), and a "day" of rhythm lasts 60 s. The
 * rhythm is compressed far more than the buckets, which is harsher on the spike baseline than
 * reality: it must follow a day's rise in 30 buckets instead of 720.
 */
import { randomBytes } from 'node:crypto';
import { cpus, totalmem } from 'node:os';
import { Client } from 'pg';
import { generateKey } from '../src/auth/key-format';
import { loadConfig } from '../src/config';
import type { AlertSettings } from '../src/services/alert-detectors';
import { formatTable, score, type Incident, type RaisedAlert, type TypeScore } from './lib/alert-scoring';
import { createBenchDatabase } from './lib/bench-database';
import { gql, startKeyledger } from './lib/processes';
import { Random } from './lib/random';
import { percentile } from './lib/stats';
import { mangle, post, Replay, rhythm, TICK_MS, Traffic, type Call, type TrafficKey, type TrafficShape } from './lib/synthetic-traffic';
import { runBench } from './lib/run';

const SEED = Number(process.env.SEED ?? 1);
const KEY_COUNT = Number(process.env.KEYS ?? 300);
const TRAFFIC_SECONDS = Number(process.env.TRAFFIC_SECONDS ?? 160);
/** Keys used only by a job every few seconds ("minutes"), and by a nightly batch */
const CRON_KEYS = Number(process.env.CRON_KEYS ?? 12);
const BATCH_KEYS = Number(process.env.BATCH_KEYS ?? 6);
const TARGET = 0.95;

const DAY_SECONDS = 60;
const SHAPE: TrafficShape = { daySeconds: DAY_SECONDS, failureNoise: 0.008, noiseSigma: 0.3, noiseMemory: 0.75, surgePerSecond: 1 / 400 };
/** Incidents are injected between these times (s into the traffic); new networks only once learning is over */
const INJECT_FROM = 20;
/** A key's first ALERT_SPIKE_HISTORY_BUCKETS (default 30) buckets only learn its rhythm: relative spikes come after */
const INJECT_SPIKES_FROM = 40;
const INJECT_NEW_IP_FROM = DAY_SECONDS + 12;
/** An alert counts for an incident if raised up to this long after it ended */
const LATE_MS = 10_000;

/**
 * The server's detector settings. Only time scales change; every threshold keeps its default.
 * - ALERT_SPIKE_BUCKET_SECONDS=1: a "minute" is a second, so floor 600, factor 4, 6 sigma and at
 *   least 30 calls keep their meaning for per-bucket counts.
 * - ALERT_NEW_IP_LEARNING_SECONDS: one compressed day, as the default learns for one real day.
 * - ALERT_EXPIRY_SCAN_SECONDS=5: a periodic scan that fits the run (creates and updates are
 *   looked at within 200 ms anyway).
 * Left alone: failure burst 20/60 s and denied burst 5/60 s (attacks run at real speed here),
 * dedup 3600 s (longer than the run: one alert per key and type), quota levels, 7 days of expiry.
 */
const ALERT_ENV: Record<string, string> = {
  ALERT_SPIKE_BUCKET_SECONDS: '1',
  ALERT_NEW_IP_LEARNING_SECONDS: String(DAY_SECONDS),
  ALERT_EXPIRY_SCAN_SECONDS: '5',
};

const ALERT_TYPES = [
  'VERIFY_FAILURE_BURST', 'REVOKED_KEY_USED', 'EXPIRED_KEY_USED', 'RATE_LIMITED', 'USAGE_SPIKE',
  'NEW_SOURCE_IP', 'QUOTA_LOW', 'KEY_EXPIRING', 'DENIED_ACTION_BURST', 'THRESHOLD',
] as const;

const KEY_PERMISSIONS = ['invoices:read', 'reports:read'];

/** What traffic keys are for, and how many; the rest ('plain') carry ordinary traffic only. */
const PURPOSES: Record<string, number> = {
  spike: 7, // a runaway client: 10x its rate for 4 s
  'rule-crossed': 6, // a VERIFY_CALLS rule on the key, crossed by a sustained rise
  'rule-quiet': 4, // a rule the key's ordinary traffic stays under
  'new-ip': 7, // used from a new /24 after learning
  'revoke-leaked': 7, // revoked, then presented again from elsewhere
  'revoke-quiet': 3, // revoked, never seen again
  'rotate-lagging': 4, // rotated with a grace period; a forgotten worker keeps the old key
  'rotate-clean': 2, // rotated; every client moved on in time
  'expiry-soon': 2, // updated mid-run to expire within the warning horizon
  'expiry-later': 2, // updated mid-run to expire beyond it
  'allowlist-attacked': 3, // stolen: presented from many addresses outside its allowlist
  allowlist: 10, // allowlisted, used from its own networks
  'near-miss': 2, // a client misconfigured for a while: failures against the key below the burst line
  'rate-burst': 7, // rate-limited key exceeding its limit
  'rate-under': 15, // rate-limited key staying under it
  'quota-drain': 4, // fixed quota drained below the warning level
  'quota-ok': 6, // fixed quota that lasts the run
  'refill-drain': 3, // refilling quota drained below its level within a period
  'refill-ok': 6, // refilling quota that each period's traffic leaves above the level
  'long-expiry': 20, // expires 8-90 days out: beyond the warning horizon
  'short-expired-used': 4, // expires during the run; presented a few times afterwards
  'short-expired-quiet': 4, // expires during the run; its client stopped before
  cron: CRON_KEYS, // a job every 3-15 s making 20-60 calls, nothing in between
  batch: BATCH_KEYS, // a nightly batch: 30-80 calls/s for 3-6 s once a day, idle otherwise
};

interface BenchKey extends TrafficKey {
  rule?: { id: string; threshold: number };
  /** QUOTA_LOW's level for this key */
  quotaLevel: number;
  expiresAt?: number;
}

interface Member {
  name: string;
  userId: string;
  keyId: string;
  secret: string;
}

type Admin = <T>(query: string, variables?: Record<string, unknown>) => Promise<T>;

interface World {
  base: string;
  admin: Admin;
  settings: AlertSettings;
  adminUserId: string;
  roleIds: Map<string, string>;
  /** Service accounts owning the traffic keys */
  services: string[];
  verifierKey: string;
  members: Member[];
  keys: BenchKey[];
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function createKey(admin: Admin, input: Record<string, unknown>) {
  return (await admin<{ createApiKey: { secret: string; apiKey: { id: string; createdAt: string } } }>(
    'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id createdAt } } }',
    { input },
  )).createApiKey;
}

/** Purposes for KEY_COUNT keys with log-normal midday rates (median 1.2/s). */
function assignPurposes(rng: Random): Array<{ purpose: string; base: number }> {
  const keys = Array.from({ length: KEY_COUNT }, () => ({ purpose: 'plain', base: Math.min(12, Math.max(0.1, 1.2 * Math.exp(0.9 * rng.normal()))) }));
  const pool = rng.shuffle(keys);
  const assign = (purpose: string, fits: (base: number) => boolean = () => true) => {
    let count = PURPOSES[purpose]!;
    for (const key of pool) {
      if (count === 0) break;
      if (key.purpose === 'plain' && fits(key.base)) {
        key.purpose = purpose;
        count--;
      }
    }
    if (count > 0) throw new Error(`not enough keys for ${purpose}; raise KEYS`);
  };
  // Spikes need keys busy enough that 10x is a real jump; rules need moderate keys so a crossing stays well below a spike.
  assign('spike', (b) => b >= 3);
  assign('rule-crossed', (b) => b >= 0.8 && b <= 3);
  assign('rule-quiet', (b) => b >= 0.8 && b <= 3);
  for (const purpose of Object.keys(PURPOSES)) if (!['spike', 'rule-crossed', 'rule-quiet'].includes(purpose)) assign(purpose);
  for (const key of keys) {
    // Limited and metered keys are modest users (their limits are sized from their rate); scheduled keys have no steady rate.
    if (key.purpose.startsWith('rate')) key.base = Math.min(key.base, 1);
    if (key.purpose.startsWith('quota') || key.purpose.startsWith('refill')) key.base = Math.min(key.base, 1.5);
    if (key.purpose === 'cron' || key.purpose === 'batch') key.base = 0;
  }
  return keys;
}

async function setUp(base: string, adminKey: string, rng: Random, settings: AlertSettings): Promise<World> {
  const admin: Admin = (query, variables = {}) => gql(base, adminKey, query, variables);
  const { roles, viewer } = await admin<{ roles: Array<{ id: string; name: string }>; viewer: { user: { id: string } } }>(
    '{ roles { id name } viewer { user { id } } }',
  );
  const roleIds = new Map(roles.map((r) => [r.name, r.id]));
  const appRole = (await admin<{ createRole: { id: string } }>(
    'mutation { createRole(input: { name: "bench-app", permissions: ["invoices:read", "invoices:write", "reports:read"] }) { id } }',
  )).createRole.id;
  const services = await mapLimit(Array.from({ length: 10 }, (_, i) => i), 4, async (i) =>
    (await admin<{ createServiceAccount: { id: string } }>(
      'mutation($n: String!, $o: ID!, $r: [ID!]) { createServiceAccount(input: { name: $n, ownerId: $o, roleIds: $r }) { id } }',
      { n: `service-${i}`, o: viewer.user.id, r: [appRole] },
    )).createServiceAccount.id,
  );
  const verifierKey = (await createKey(admin, { name: 'bench-verifier', roleIds: [roleIds.get('verifier')] })).secret;
  const members = await mapLimit(Array.from({ length: 12 }, (_, i) => i), 4, async (i): Promise<Member> => {
    const name = `member-${i}`;
    const userId = (await admin<{ createUser: { id: string } }>(
      'mutation($n: String!, $e: String!, $r: [ID!]) { createUser(input: { name: $n, email: $e, roleIds: $r }) { id } }',
      { n: name, e: `${name}@bench.example`, r: [roleIds.get('member')] },
    )).createUser.id;
    const key = await createKey(admin, { ownerId: userId, name: `${name}-key`, permissions: ['*'] });
    return { name, userId, keyId: key.apiKey.id, secret: key.secret };
  });

  // Each key has its own /24; four in ten also use one of 20 shared networks (an office, a cloud region).
  const shared = Array.from({ length: 20 }, (_, g) => ({ network: `172.16.${g}`, hosts: Array.from({ length: 6 }, () => rng.int(2, 250)) }));
  const regions = [0, 0.12, -0.25];
  const plans = assignPurposes(rng).map(({ purpose, base }, i) => {
    const networks = [`10.${100 + (i >> 8)}.${i & 255}`];
    const hosts = [Array.from({ length: rng.int(1, 3) }, () => rng.int(2, 250))];
    if (rng.chance(0.4)) {
      const office = rng.pick(shared);
      networks.push(office.network);
      hosts.push(rng.shuffle(office.hosts).slice(0, rng.int(1, 2)));
    }
    const input: Record<string, unknown> = { ownerId: services[i % services.length], name: `key-${i}`, permissions: KEY_PERMISSIONS };
    if (purpose.startsWith('allowlist')) input.allowedCidrs = networks.map((n) => `${n}.0/24`);
    // 20 per 5 s: at least four times a rate-limited key's busiest 5 s.
    if (purpose.startsWith('rate')) input.rateLimit = { limit: 20, windowSeconds: 5 };
    // Fixed quotas outlast about twice the run's expected use; 20 s refills leave far more than 10% each period.
    if (purpose.startsWith('quota')) input.remaining = Math.ceil(base * TRAFFIC_SECONDS * 1.2) + 60;
    if (purpose.startsWith('refill')) {
      const amount = Math.ceil(base * 60) + 40;
      Object.assign(input, { remaining: amount, refill: { amount, intervalSeconds: 20 } });
    }
    if (purpose === 'long-expiry') input.expiresAt = new Date(Date.now() + rng.between(8, 90) * 86_400_000).toISOString();
    if (purpose.startsWith('short-expired')) input.expiresAt = new Date(Date.now() + rng.between(75, 115) * 1000).toISOString();
    const phase = regions[rng.chance(0.5) ? 0 : rng.chance(0.6) ? 1 : 2]!;
    return { name: `key-${i}`, purpose, base, networks, hosts, input, phase };
  });
  const keys = await mapLimit(plans, 16, async (plan): Promise<BenchKey> => {
    const created = await createKey(admin, plan.input);
    const refill = plan.input.refill as { amount: number } | undefined;
    return {
      name: plan.name,
      purpose: plan.purpose,
      id: created.apiKey.id,
      secret: created.secret,
      networks: plan.networks,
      hosts: plan.hosts,
      secondaryShare: rng.between(0.1, 0.5),
      base: plan.base,
      phase: plan.phase,
      noise: SHAPE.noiseSigma * rng.normal(),
      surge: null,
      stopAt: Infinity,
      createdAt: Date.parse(created.apiKey.createdAt),
      remaining: (plan.input.remaining as number | undefined) ?? null,
      quotaLevel: refill ? Math.max(1, Math.ceil(refill.amount * settings.quotaLow.fraction)) : settings.quotaLow.remaining,
      expiresAt: typeof plan.input.expiresAt === 'string' ? Date.parse(plan.input.expiresAt) : undefined,
    };
  });
  for (const key of keys.filter((k) => k.purpose.startsWith('rule'))) {
    // Four times the key's midday volume in 10 s, plus 40: its surges and noise stay under it.
    const threshold = Math.round(key.base * 10 * 4) + 40;
    const rule = await admin<{ createAlertRule: { id: string } }>('mutation($input: CreateAlertRuleInput!) { createAlertRule(input: $input) { id } }', {
      input: { name: `calls of ${key.name}`, metric: 'VERIFY_CALLS', threshold, windowSeconds: 10, severity: 'MEDIUM', keyId: key.id },
    });
    key.rule = { id: rule.createAlertRule.id, threshold };
  }
  return { base, admin, settings, adminUserId: viewer.user.id, roleIds, services, verifierKey, members, keys };
}

/** The scheduled trace: ordinary traffic every tick, incidents and decoys at planned times, with the ground truth. */
class Trace {
  readonly replay: Replay;
  readonly traffic: Traffic;
  readonly incidents: Incident[] = [];
  readonly decoys = new Map<string, number>();
  readonly memberAnswers = new Map<string, number>();
  /** The answers to each incident's calls: whether the server saw what the ground truth claims */
  readonly answers = new Map<Incident, Map<string, number>>();
  /** What every key id that took part stood for, rotated predecessors included */
  readonly purposeOf = new Map<string, string>();
  private readonly plan: Array<{ t: number; run: () => unknown }> = [];
  // Scheduled work runs unawaited; failures are kept and rethrown once the traffic is over.
  private readonly background: Array<Promise<unknown>> = [];
  private readonly failures: unknown[] = [];
  private t0 = 0;

  constructor(
    private readonly world: World,
    private readonly rng: Random,
  ) {
    this.replay = new Replay(world.base, world.verifierKey);
    this.traffic = new Traffic(world.keys, rng, SHAPE);
    for (const key of world.keys) this.purposeOf.set(key.id, key.purpose);
    for (const member of world.members) this.purposeOf.set(member.keyId, 'member');
    this.warmUp();
    this.scheduledJobs();
    this.failureBursts();
    this.revocations();
    this.expiries();
    this.rateLimits();
    this.spikes();
    this.newSources();
    this.quotas();
    this.thresholds();
    this.members();
    this.plan.sort((a, b) => a.t - b.t);
  }

  private at(t: number, run: () => unknown): void {
    this.plan.push({ t, run });
  }

  private track(work: Promise<unknown>): void {
    this.background.push(work.catch((error: unknown) => void this.failures.push(error)));
  }

  private when(from = INJECT_FROM, to = TRAFFIC_SECONDS - 20): number {
    return this.rng.between(from, to);
  }

  private having(purpose: string): BenchKey[] {
    return this.world.keys.filter((k) => k.purpose === purpose);
  }

  /** Records an incident whose calls are `count` of `make` spread over `seconds` from `start`. */
  private inject(incident: Omit<Incident, 'start' | 'end'>, start: number, seconds: number, count: number, make: () => Call): void {
    const listen = this.listen(incident);
    const span = this.replay.spread(start, seconds, count, () => ({ ...make(), tag: incident.type, onAnswer: listen }));
    this.incidents.push(Object.assign(incident, span));
  }

  private listen(incident: Omit<Incident, 'start' | 'end'>): (code: string) => void {
    const answers = new Map<string, number>();
    this.answers.set(incident as Incident, answers);
    return (code) => answers.set(code, (answers.get(code) ?? 0) + 1);
  }

  private decoy(type: string, count = 1): void {
    this.decoys.set(type, (this.decoys.get(type) ?? 0) + count);
  }

  /** Every network a key normally uses is seen early in its learning day, as a real day would show them. */
  private warmUp(): void {
    for (const key of this.world.keys) {
      key.networks.forEach((_, n) => this.at(this.rng.between(0, 8), () => this.replay.at(Date.now(), this.traffic.call(key, false, this.traffic.ip(key, n)))));
    }
  }

  /** Keys used only on a schedule: the spike baseline must not take every run of a job for a spike. */
  private scheduledJobs(): void {
    const { rng, replay, traffic } = this;
    for (const key of this.having('cron')) {
      const every = rng.pick([3, 5, 10, 15]);
      const calls = rng.int(20, 60);
      this.purposeOf.set(key.id, `cron every ${every} s`);
      for (let t = rng.between(0, every); t < TRAFFIC_SECONDS; t += every) {
        this.at(t, () => replay.spread(Date.now(), 0.8, Math.round(calls * rng.between(0.8, 1.2)), () => traffic.call(key)));
      }
    }
    for (const key of this.having('batch')) {
      const rate = rng.int(30, 80);
      const seconds = rng.between(3, 6);
      this.purposeOf.set(key.id, 'nightly batch');
      // At night in the key's region, once a day.
      for (let t = rng.between(2, 12); t < TRAFFIC_SECONDS; t += DAY_SECONDS) {
        this.at(t, () => replay.spread(Date.now(), seconds, Math.round(rate * seconds), () => traffic.call(key)));
      }
    }
  }

  /** Credential stuffing from single addresses; stolen allowlisted keys tried from many; near misses and stray noise. */
  private failureBursts(): void {
    const { rng, replay, traffic } = this;
    for (let i = 0; i < 5; i++) {
      this.at(this.when(), () => {
        const ip = `203.0.113.${10 + i}`;
        const count = rng.int(25, 60);
        const seconds = rng.between(3, 12);
        this.inject({ type: 'VERIFY_FAILURE_BURST', label: `${count} bad keys from ${ip} in ${seconds.toFixed(0)} s`, ip }, Date.now(), seconds, count, () => ({
          input: { key: rng.chance(0.7) ? generateKey('kl') : mangle(generateKey('kl'), rng), ip },
          tag: '',
        }));
      });
    }
    for (const key of this.having('allowlist-attacked')) {
      this.at(this.when(), () => {
        const count = rng.int(25, 35);
        const label = `${key.name} presented from ${count} addresses outside its allowlist`;
        this.inject({ type: 'VERIFY_FAILURE_BURST', label, keyId: key.id }, Date.now(), 8, count, () => ({
          input: { key: key.secret, ip: `198.18.${rng.int(0, 255)}.${rng.int(1, 254)}`, permissions: ['invoices:read'] },
          tag: '',
        }));
      });
    }
    // A client retrying a stale key, keys asking for a permission they lack: 12-14 failures in 40-45 s, under 20 a minute.
    for (let i = 0; i < 3; i++) {
      const stale = generateKey('kl');
      this.at(this.when(), () => replay.spread(Date.now(), 45, 14, () => ({ input: { key: stale, ip: `192.0.2.${20 + i}` }, tag: 'near-miss' })));
    }
    for (const key of this.having('near-miss')) {
      this.at(this.when(), () =>
        replay.spread(Date.now(), 40, 12, () => ({ input: { key: key.secret, ip: traffic.ip(key, 0), permissions: ['invoices:write'] }, tag: 'near-miss', key })),
      );
    }
    // Background radiation: stray addresses trying one to three bad keys.
    for (let t = rng.between(0, 3); t < TRAFFIC_SECONDS; t += rng.between(0.5, 4)) {
      this.at(t, () => {
        const ip = `${rng.int(130, 199)}.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`;
        replay.spread(Date.now(), rng.between(0.5, 5), rng.int(1, 3), () => ({ input: { key: rng.chance(0.7) ? generateKey('kl') : 'kl_short', ip }, tag: 'background' }));
      });
    }
    this.decoy('VERIFY_FAILURE_BURST', 3 + this.having('near-miss').length + this.having('allowlist').length);
  }

  /** The owner pulls a key from its client and revokes it; for some, a leaked copy turns up later. */
  private revocations(): void {
    const { rng } = this;
    for (const key of [...this.having('revoke-leaked'), ...this.having('revoke-quiet')]) {
      this.at(this.when(INJECT_FROM, TRAFFIC_SECONDS - 30), async () => {
        key.stopAt = Date.now();
        await sleep(1000);
        await this.world.admin('mutation($id: ID!) { revokeApiKey(id: $id, reason: "bench") { id } }', { id: key.id });
        if (key.purpose === 'revoke-quiet') return this.decoy('REVOKED_KEY_USED');
        const ip = `45.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`;
        const count = rng.int(3, 6);
        const label = `${key.name} presented ${count} times from ${ip} after revocation`;
        this.inject({ type: 'REVOKED_KEY_USED', label, keyId: key.id }, Date.now() + rng.between(3, 10) * 1000, 10, count, () => ({ input: { key: key.secret, ip }, tag: '' }));
      });
    }
  }

  /** Rotations with a grace period, keys that run out, expiry set near or far: EXPIRED_KEY_USED and KEY_EXPIRING. */
  private expiries(): void {
    const { rng, traffic, world } = this;
    for (const key of [...this.having('rotate-lagging'), ...this.having('rotate-clean')]) {
      this.at(this.when(INJECT_FROM, TRAFFIC_SECONDS - 35), async () => {
        const old = { id: key.id, secret: key.secret, ip: traffic.ip(key, 0) };
        const rotatedAt = Date.now();
        const successor = await world.admin<{ rotateApiKey: { secret: string; apiKey: { id: string; createdAt: string } } }>(
          'mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 8) { secret apiKey { id createdAt } } }',
          { id: key.id },
        );
        this.incidents.push({ type: 'KEY_EXPIRING', label: `${key.name} rotated with 8 s of grace`, start: rotatedAt, end: Date.now(), keyId: old.id });
        await sleep(2000); // the client picks up its new key
        this.purposeOf.set(successor.rotateApiKey.apiKey.id, `${key.purpose} (successor)`);
        Object.assign(key, { id: successor.rotateApiKey.apiKey.id, secret: successor.rotateApiKey.secret, createdAt: Date.parse(successor.rotateApiKey.apiKey.createdAt) });
        if (key.purpose === 'rotate-clean') return this.decoy('EXPIRED_KEY_USED');
        const count = rng.int(3, 5);
        const label = `${key.name}'s old key presented ${count} times after its grace`;
        this.inject({ type: 'EXPIRED_KEY_USED', label, keyId: old.id }, rotatedAt + (8 + rng.between(2, 8)) * 1000, 8, count, () => ({ input: { key: old.secret, ip: old.ip }, tag: '' }));
      });
    }
    for (const key of [...this.having('short-expired-used'), ...this.having('short-expired-quiet')]) {
      const expiresAt = key.expiresAt!;
      key.stopAt = expiresAt - 3000;
      this.incidents.push({ type: 'KEY_EXPIRING', label: `${key.name} created to expire in ${((expiresAt - key.createdAt) / 1000).toFixed(0)} s`, start: key.createdAt, end: key.createdAt, keyId: key.id });
      if (key.purpose === 'short-expired-quiet') {
        this.decoy('EXPIRED_KEY_USED');
        continue;
      }
      const count = rng.int(3, 5);
      const label = `${key.name} presented ${count} times after it expired`;
      this.inject({ type: 'EXPIRED_KEY_USED', label, keyId: key.id }, expiresAt + rng.between(2, 8) * 1000, 8, count, () => ({ input: { key: key.secret, ip: traffic.ip(key, 0) }, tag: '' }));
    }
    const horizon = world.settings.expiring.days;
    for (const key of [...this.having('expiry-soon'), ...this.having('expiry-later')]) {
      const soon = key.purpose === 'expiry-soon';
      this.at(this.when(), async () => {
        const days = soon ? rng.between(1, horizon - 1) : rng.between(horizon + 3, 40);
        const start = Date.now();
        await world.admin('mutation($id: ID!, $e: DateTimeISO!) { updateApiKey(id: $id, input: { expiresAt: $e }) { id } }', {
          id: key.id,
          e: new Date(start + days * 86_400_000).toISOString(),
        });
        if (!soon) this.decoy('KEY_EXPIRING');
        else this.incidents.push({ type: 'KEY_EXPIRING', label: `${key.name} updated to expire in ${days.toFixed(1)} days`, start, end: Date.now(), keyId: key.id });
      });
    }
    for (let i = 0; i < 6; i++) {
      const soon = i < 4;
      this.at(this.when(), async () => {
        const days = soon ? rng.between(1, horizon - 1) : rng.between(horizon + 2, 30);
        const start = Date.now();
        const created = await createKey(world.admin, {
          ownerId: world.services[i],
          name: `temp-${i}`,
          permissions: KEY_PERMISSIONS,
          expiresAt: new Date(start + days * 86_400_000).toISOString(),
        });
        this.purposeOf.set(created.apiKey.id, soon ? 'temp-soon' : 'temp-later');
        if (!soon) this.decoy('KEY_EXPIRING');
        else this.incidents.push({ type: 'KEY_EXPIRING', label: `temp-${i} created to expire in ${days.toFixed(1)} days`, start, end: Date.now(), keyId: created.apiKey.id });
      });
    }
    this.decoy('KEY_EXPIRING', this.having('long-expiry').length);
  }

  /**
   * 45 calls in 2 s against a limit of 20 per 5 s: more than two fixed windows hold, wherever a
   * window boundary falls, so the key is refused; and fewer per second than a spike needs.
   */
  private rateLimits(): void {
    for (const key of this.having('rate-burst')) {
      this.at(this.when(), () =>
        this.inject({ type: 'RATE_LIMITED', label: `${key.name}: 45 calls in 2 s, limit 20 per 5 s`, keyId: key.id }, Date.now(), 2, 45, () => this.traffic.call(key, false)),
      );
    }
    this.decoy('RATE_LIMITED', this.having('rate-under').length);
  }

  /** A runaway client: 10x the key's expected rate (at least 60/s) for 4 s. */
  private spikes(): void {
    for (const key of this.having('spike')) {
      this.at(this.when(INJECT_SPIKES_FROM), () => {
        const expected = key.base * rhythm((Date.now() - this.t0) / 1000, key.phase, DAY_SECONDS);
        const rate = Math.max(10 * expected, 60);
        const label = `${key.name}: ${rate.toFixed(0)}/s against an expected ${expected.toFixed(1)}/s`;
        this.inject({ type: 'USAGE_SPIKE', label, keyId: key.id }, Date.now(), 4, Math.round(rate * 4), () => this.traffic.call(key, false));
      });
    }
    // Organic surges are added when the run is over; every scheduled job is a decoy too.
    this.decoy('USAGE_SPIKE', this.having('cron').length + this.having('batch').length);
  }

  /** A key used, successfully, from a network it never used during learning. */
  private newSources(): void {
    this.having('new-ip').forEach((key, i) => {
      this.at(this.when(INJECT_NEW_IP_FROM), () => {
        const prefix = `100.${64 + i}.${this.rng.int(0, 255)}`;
        const incident = { type: 'NEW_SOURCE_IP', label: `${key.name} used from ${prefix}.0/24`, keyId: key.id, network: `${prefix}.0/24` };
        this.inject(incident, Date.now(), 4, 5, () => this.traffic.call(key, false, `${prefix}.${this.rng.int(1, 254)}`));
      });
    });
    this.decoy('NEW_SOURCE_IP', this.world.keys.filter((k) => k.networks.length > 1).length);
  }

  /** A client draining the quota (5-20 extra calls/s) until it is just below the warning level. */
  private quotas(): void {
    for (const key of [...this.having('quota-drain'), ...this.having('refill-drain')]) {
      this.at(this.when(INJECT_FROM, TRAFFIC_SECONDS - 45), async () => {
        const start = Date.now();
        const target = Math.max(1, key.quotaLevel - 2);
        const incident = { type: 'QUOTA_LOW', label: '', keyId: key.id };
        const onAnswer = this.listen(incident);
        while (Date.now() - start < 40_000 && (key.remaining ?? 0) > target) {
          const rate = Math.min(20, Math.max(5, Math.ceil(((key.remaining ?? 0) - target) / 10)));
          this.replay.spread(Date.now(), 0.25, Math.ceil(rate / 4), () => ({ ...this.traffic.call(key, false), tag: 'QUOTA_LOW', onAnswer }));
          await sleep(250);
        }
        incident.label = `${key.name} drained to ${key.remaining} (level ${key.quotaLevel})`;
        this.incidents.push(Object.assign(incident, { start, end: Date.now() }));
      });
    }
    this.decoy('QUOTA_LOW', this.having('quota-ok').length + this.having('refill-ok').length);
  }

  /** A sustained rise to 1.3x a rule's threshold over its 10 s window. */
  private thresholds(): void {
    for (const key of this.having('rule-crossed')) {
      this.at(this.when(), () => {
        const extra = Math.ceil((key.rule!.threshold * 1.3) / 10);
        const label = `${key.name}: +${extra}/s for 10 s against ${key.rule!.threshold} per 10 s`;
        this.inject({ type: 'THRESHOLD', label, ruleId: key.rule!.id }, Date.now(), 10, extra * 10, () => this.traffic.call(key, false));
      });
    }
    this.decoy('THRESHOLD', this.having('rule-quiet').length);
  }

  /** Members go about their business over the API; some probe admin-only operations. */
  private members(): void {
    const { rng, world } = this;
    const tally = (what: string) => this.memberAnswers.set(what, (this.memberAnswers.get(what) ?? 0) + 1);
    const probes: Array<(m: Member) => [string, Record<string, unknown>]> = [
      (m) => [`mutation { createRole(input: { name: "probe-${m.name}-${rng.int(0, 1e9)}", permissions: ["*"] }) { id } }`, {}],
      (m) => ['mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }', { u: m.userId, r: world.roleIds.get('admin') }],
      (m) => ['mutation($n: String!) { createUser(input: { name: $n, email: $n }) { id } }', { n: `${m.name}-${rng.int(0, 1e9)}@probe.example` }],
      () => ['mutation($u: ID!) { revokeAllApiKeys(userId: $u, reason: "probe") }', { u: world.adminUserId }],
    ];
    const probe = (member: Member) => {
      const [query, variables] = rng.pick(probes)(member);
      this.track(post(world.base, member.secret, query, variables).then((a) => tally(`probe ${a.errors?.[0]?.extensions?.code ?? 'ALLOWED'}`)));
    };
    const routine = ['{ viewer { permissions } }', '{ apiKeys(first: 5) { totalCount } }'];
    world.members.forEach((member, i) => {
      for (let t = rng.between(0, 3); t < TRAFFIC_SECONDS; t += rng.between(2, 4)) {
        this.at(t, () => this.track(post(world.base, member.secret, rng.pick(routine)).then((a) => tally(`routine ${a.errors?.[0]?.extensions?.code ?? 'OK'}`))));
      }
      if (i < 6) {
        this.at(this.when(), () => {
          const count = rng.int(6, 10);
          const start = Date.now();
          for (let p = 0; p < count; p++) setTimeout(() => probe(member), (p / count) * 5000);
          this.incidents.push({ type: 'DENIED_ACTION_BURST', label: `${member.name} denied ${count} times in 5 s`, start, end: start + 5000, keyId: member.keyId });
        });
      } else {
        // Now and then a member tries something it may not: half of them one short of the burst line within a minute.
        const tries = i < 9 ? world.settings.deniedBurst.threshold - 1 : rng.int(1, 2);
        const start = this.when(0, TRAFFIC_SECONDS - 60);
        for (let p = 0; p < tries; p++) this.at(start + rng.between(0, 50), () => probe(member));
        this.decoy('DENIED_ACTION_BURST');
      }
    });
  }

  /** Plays the trace in real time; resolves with its length in seconds once every answer is in. */
  async run(): Promise<number> {
    const oldestKey = Math.min(...this.world.keys.map((k) => k.createdAt));
    this.t0 = Date.now();
    if (this.t0 + 8000 - oldestKey > this.world.settings.newIpLearningSeconds * 1000) {
      console.warn('setup outlasted the learning window: networks first seen in the warm-up will raise NEW_SOURCE_IP');
    }
    let next = this.t0;
    let due = 0;
    for (;;) {
      const now = Date.now();
      const t = (now - this.t0) / 1000;
      if (t >= TRAFFIC_SECONDS) break;
      while (due < this.plan.length && this.plan[due]!.t <= t) this.track(Promise.resolve().then(this.plan[due++]!.run));
      this.replay.flush(now, this.traffic.tick(now, t));
      next += TICK_MS;
      await sleep(Math.max(0, next - Date.now()));
    }
    await Promise.all(this.background);
    await this.replay.drain();
    const failure = this.failures[0] ?? this.replay.errors[0];
    if (failure !== undefined) throw failure;
    this.decoy('USAGE_SPIKE', this.traffic.surges);
    return (Date.now() - this.t0) / 1000;
  }
}

async function fetchAlerts(admin: Admin): Promise<RaisedAlert[]> {
  type Page = {
    alerts: {
      pageInfo: { hasNextPage: boolean; endCursor: string | null };
      nodes: Array<{ id: string; type: string; createdAt: string; message: string; key: { id: string } | null; rule: { id: string } | null; details: Record<string, unknown> | null }>;
    };
  };
  const alerts: RaisedAlert[] = [];
  for (let after: string | null = null; ; ) {
    const page: Page = await admin<Page>(
      'query($after: String) { alerts(first: 500, after: $after) { pageInfo { hasNextPage endCursor } nodes { id type createdAt message key { id } rule { id } details } } }',
      { after },
    );
    for (const a of page.alerts.nodes) {
      alerts.push({ id: a.id, type: a.type, createdAt: Date.parse(a.createdAt), message: a.message, keyId: a.key?.id ?? null, ruleId: a.rule?.id ?? null, details: a.details ?? {} });
    }
    if (!page.alerts.pageInfo.hasNextPage) return alerts;
    after = page.alerts.pageInfo.endCursor;
  }
}

function report(world: World, trace: Trace, scores: TypeScore[], trafficSeconds: number, totalSeconds: number, pgVersion: string): void {
  const { replay } = trace;
  const cpu = cpus();
  console.log(
    `\nalert detection: seed ${SEED}, ${world.keys.length} traffic keys (${CRON_KEYS} cron, ${BATCH_KEYS} nightly batch) + ${world.members.length} members, ` +
      `${trafficSeconds.toFixed(0)} s of traffic (a day is ${DAY_SECONDS} s), ${totalSeconds.toFixed(0)} s in all`,
  );
  console.log(`machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, PostgreSQL ${pgVersion}`);
  console.log(`server ALERT_* set: ${Object.entries(ALERT_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  console.log(`effective: ${JSON.stringify(world.settings)}`);
  console.log(
    `replay: ${replay.calls} verifications (${(replay.calls / trafficSeconds).toFixed(0)}/s), verifyKeys batches p50 ${percentile(replay.latencies, 50).toFixed(1)} ms, ` +
      `p99 ${percentile(replay.latencies, 99).toFixed(1)} ms, max ${Math.max(...replay.latencies).toFixed(0)} ms`,
  );
  console.log('\nanswers by what was sent:');
  for (const [tag, tally] of [...replay.codes].sort(([a], [b]) => a.localeCompare(b))) {
    console.log(`  ${tag}: ${[...tally].sort((a, b) => b[1] - a[1]).map(([code, n]) => `${code} ${n}`).join(', ')}`);
  }
  console.log(`  members over the API: ${[...trace.memberAnswers].map(([what, n]) => `${what} ${n}`).join(', ')}`);
  console.log(`\n${formatTable(scores, TARGET)}\n`);
  console.log('TP: incidents reported; dup: further alerts on a reported incident (neither TP nor FP); precision TP/(TP+FP), recall TP/(TP+FN).');
  console.log('decoys: subjects brought near a line without crossing it (USAGE_SPIKE: scheduled jobs and organic surges; NEW_SOURCE_IP: keys on two networks).');
  // Each incident's calls must have been answered as the ground truth claims (e.g. a burst really refused).
  const failing = new Set(['MALFORMED', 'NOT_FOUND', 'REVOKED', 'EXPIRED', 'DISABLED', 'OWNER_DISABLED', 'IP_NOT_ALLOWED', 'INSUFFICIENT_PERMISSIONS']);
  const intended = (incident: Incident, answers: ReadonlyMap<string, number>): boolean => {
    const count = (codes: (code: string) => boolean) => [...answers].filter(([code]) => codes(code)).reduce((n, [, c]) => n + c, 0);
    if (incident.type === 'VERIFY_FAILURE_BURST') return count((c) => failing.has(c)) >= world.settings.failureBurst.threshold;
    const refusals: Record<string, string> = { REVOKED_KEY_USED: 'REVOKED', EXPIRED_KEY_USED: 'EXPIRED', RATE_LIMITED: 'RATE_LIMITED' };
    const code = refusals[incident.type] ?? 'VALID';
    return count((c) => c === code) > 0;
  };
  const unintended = [...trace.answers].filter(([incident, answers]) => !intended(incident, answers));
  console.log(
    unintended.length === 0
      ? `ground truth: the calls of all ${trace.answers.size} call-borne incidents were answered as intended`
      : `ground truth NOT as intended: ${unintended.map(([i, a]) => `${i.label} -> ${JSON.stringify(Object.fromEntries(a))}`).join('; ')}`,
  );
  const purpose = (alert: RaisedAlert) => (alert.keyId ? (trace.purposeOf.get(alert.keyId) ?? 'other key') : 'no key');
  for (const s of scores) {
    for (const miss of s.missed.slice(0, 5)) console.log(`  FN ${s.type}: ${miss.label}`);
    if (s.fp === 0) continue;
    const byPurpose = new Map<string, number>();
    for (const alarm of s.falseAlarms) byPurpose.set(purpose(alarm), (byPurpose.get(purpose(alarm)) ?? 0) + 1);
    console.log(`  FP ${s.type} by what the key was for: ${[...byPurpose].map(([p, n]) => `${p} ${n}`).join(', ')}`);
    for (const alarm of s.falseAlarms.slice(0, 6)) console.log(`    ${alarm.message} [${purpose(alarm)}] ${JSON.stringify(alarm.details)}`);
  }
  const short = scores.filter((s) => (s.precision ?? 0) < TARGET || (s.recall ?? 0) < TARGET).map((s) => s.type);
  console.log(short.length === 0 ? `\nevery type meets ${TARGET}` : `\nbelow ${TARGET}: ${short.join(', ')}`);
  if (CRON_KEYS + BATCH_KEYS > 0) console.log('(CRON_KEYS=0 BATCH_KEYS=0 replays the trace without scheduled jobs)');
}

async function main(): Promise<void> {
  if (TRAFFIC_SECONDS < INJECT_NEW_IP_FROM + 40) throw new Error(`TRAFFIC_SECONDS must be at least ${INJECT_NEW_IP_FROM + 40}`);
  const rng = new Random(SEED);
  const started = Date.now();
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const serverEnv = { DATABASE_URL: db.url, KEY_PEPPER: randomBytes(32).toString('hex'), BOOTSTRAP_ADMIN_KEY: adminKey, ...ALERT_ENV };
  const settings = loadConfig(serverEnv).alerts;
  const server = await startKeyledger(serverEnv);
  try {
    const world = await setUp(server.base, adminKey, rng, settings);
    const trace = new Trace(world, rng);
    const trafficSeconds = await trace.run();
    // Detectors and the sink work behind the answers (quota, network lookups, raising): let them finish.
    await sleep(5000);
    const alerts = await fetchAlerts(world.admin);
    const lateMs = (type: string) => (type === 'KEY_EXPIRING' ? settings.expiring.scanSeconds * 1000 : 0) + LATE_MS;
    const scores = score(ALERT_TYPES, trace.incidents, alerts, trace.decoys, lateMs);
    const pg = new Client({ connectionString: db.url });
    await pg.connect();
    const pgVersion = ((await pg.query('SHOW server_version')).rows[0] as { server_version: string }).server_version;
    await pg.end();
    report(world, trace, scores, trafficSeconds, (Date.now() - started) / 1000, pgVersion);
  } finally {
    await server.stop();
    await db.cleanup();
  }
}

runBench(main);
