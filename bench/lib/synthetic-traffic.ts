/**
 * Ordinary verification traffic for many keys (a daily rhythm per region, correlated noise,
 * organic surges, a small share of failures, one or two networks per key) and the replay that
 * sends it, with anything else scheduled, through verifyKeys in batches.
 */
import { generateKey } from '../../src/auth/key-format';
import type { Random } from './random';

export const TICK_MS = 100;
const BATCH_SIZE = 100;
const RESOURCES = ['GET /invoices', 'GET /invoices/:id', 'GET /reports/monthly', 'POST /invoices/search'];

export interface TrafficShape {
  /** Seconds in one compressed day of rhythm */
  daySeconds: number;
  /** Share of ordinary calls that fail: a permission the key lacks, a mangled or an unknown key */
  failureNoise: number;
  /** Log-normal noise on each key's rate, correlated from one second to the next */
  noiseSigma: number;
  noiseMemory: number;
  /** Chance per key and second that an organic surge (a batch of work, a busy customer) starts */
  surgePerSecond: number;
}

export interface TrafficKey {
  name: string;
  /** What the key is for in the trace */
  purpose: string;
  id: string;
  secret: string;
  /** /24 networks as a.b.c; the first is home, a second one (shared with other keys) is optional */
  networks: string[];
  hosts: number[][];
  /** Share of calls from the second network */
  secondaryShare: number;
  /** Calls per second at midday; 0 for keys used only on a schedule */
  base: number;
  /** Fraction of a day the key's region is shifted by */
  phase: number;
  noise: number;
  surge: { until: number; factor: number } | null;
  /** Ordinary traffic stops at this time (ms since the epoch) */
  stopAt: number;
  createdAt: number;
  /** Quota left, as the latest answer said; null when unlimited */
  remaining: number | null;
}

export interface VerifyInput {
  key: string;
  ip: string;
  permissions?: string[];
  resource?: string;
}

export interface Call {
  input: VerifyInput;
  /** What the call stands for, to tabulate the answers by */
  tag: string;
  /** The traffic key whose secret the call presents, if any */
  key?: TrafficKey;
  /** Told the answer's code */
  onAnswer?: (code: string) => void;
}

export interface GraphQLAnswer<T> {
  data?: T;
  errors?: Array<{ message: string; extensions?: { code?: string } }>;
}

/** POSTs a GraphQL document; errors are returned, not thrown (a denied probe is an expected answer). */
export async function post<T>(base: string, key: string, query: string, variables: Record<string, unknown> = {}): Promise<GraphQLAnswer<T>> {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as GraphQLAnswer<T>;
}

/** Night at 0.15, midday at 1, with a steep morning. */
export function rhythm(t: number, phase: number, daySeconds: number): number {
  const daylight = 0.5 - 0.5 * Math.cos(2 * Math.PI * (t / daySeconds + phase));
  return 0.15 + 0.85 * daylight ** 1.5;
}

/** The same key with one character changed: its checksum fails (MALFORMED). */
export function mangle(secret: string, rng: Random): string {
  const at = rng.int(5, secret.length - 8);
  return secret.slice(0, at) + (secret[at] === 'x' ? 'y' : 'x') + secret.slice(at + 1);
}

/** Sends verifications in batches of up to 100 through verifyKeys and tallies the answers by tag. */
export class Replay {
  private queue: Array<{ at: number; call: Call }> = [];
  private readonly inflight = new Set<Promise<void>>();
  readonly codes = new Map<string, Map<string, number>>();
  readonly latencies: number[] = [];
  readonly errors: unknown[] = [];
  calls = 0;

  constructor(
    private readonly base: string,
    private readonly verifierKey: string,
  ) {}

  /** Sends `call` at the first flush from `when` (ms since the epoch) on. */
  at(when: number, call: Call): void {
    this.queue.push({ at: when, call });
  }

  /** `count` calls spread evenly over `seconds` from `start`; returns the span for the ground truth. */
  spread(start: number, seconds: number, count: number, make: (i: number) => Call): { start: number; end: number } {
    for (let i = 0; i < count; i++) this.at(start + (i / count) * seconds * 1000, make(i));
    return { start, end: start + seconds * 1000 };
  }

  /** Sends what is due by `now` together with `calls`, without waiting for the answers. */
  flush(now: number, calls: Call[]): void {
    const due = calls;
    const later: Array<{ at: number; call: Call }> = [];
    for (const item of this.queue) {
      if (item.at <= now) due.push(item.call);
      else later.push(item);
    }
    this.queue = later;
    for (let i = 0; i < due.length; i += BATCH_SIZE) this.send(due.slice(i, i + BATCH_SIZE));
  }

  private send(calls: Call[]): void {
    const started = performance.now();
    this.calls += calls.length;
    const request = post<{ verifyKeys: Array<{ code: string; remaining: number | null }> }>(
      this.base,
      this.verifierKey,
      'query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) { code remaining } }',
      { i: calls.map((c) => c.input) },
    )
      .then((answer) => {
        this.latencies.push(performance.now() - started);
        if (!answer.data) throw new Error(`verifyKeys: ${JSON.stringify(answer.errors)}`);
        answer.data.verifyKeys.forEach((result, i) => {
          const call = calls[i]!;
          const tally = this.codes.get(call.tag) ?? new Map<string, number>();
          this.codes.set(call.tag, tally);
          tally.set(result.code, (tally.get(result.code) ?? 0) + 1);
          call.onAnswer?.(result.code);
          if (call.key && call.input.key === call.key.secret && result.remaining !== null) call.key.remaining = result.remaining;
        });
      })
      .catch((error: unknown) => void this.errors.push(error))
      .finally(() => this.inflight.delete(request));
    this.inflight.add(request);
  }

  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
  }
}

/** Each key's calls per tick: Poisson around base x rhythm x noise x surge. */
export class Traffic {
  surges = 0;
  private second = -1;

  constructor(
    readonly keys: readonly TrafficKey[],
    private readonly rng: Random,
    private readonly shape: TrafficShape,
  ) {}

  tick(now: number, t: number): Call[] {
    const second = Math.floor(t);
    if (second !== this.second) {
      this.second = second;
      this.evolve(now);
    }
    const calls: Call[] = [];
    for (const key of this.keys) {
      if (now >= key.stopAt || key.base === 0) continue;
      const surge = key.surge && now < key.surge.until ? key.surge.factor : 1;
      const rate = key.base * rhythm(t, key.phase, this.shape.daySeconds) * Math.exp(key.noise - this.shape.noiseSigma ** 2 / 2) * surge;
      for (let n = this.rng.poisson((rate * TICK_MS) / 1000); n > 0; n--) calls.push(this.call(key));
    }
    return calls;
  }

  private evolve(now: number): void {
    const { noiseMemory, noiseSigma, surgePerSecond } = this.shape;
    for (const key of this.keys) {
      key.noise = noiseMemory * key.noise + Math.sqrt(1 - noiseMemory ** 2) * noiseSigma * this.rng.normal();
      if (key.surge && now >= key.surge.until) key.surge = null;
      if (!key.surge && key.base > 0 && now < key.stopAt && this.rng.chance(surgePerSecond)) {
        key.surge = { until: now + this.rng.between(8_000, 20_000), factor: this.rng.between(1.3, 2) };
        this.surges++;
      }
    }
  }

  /** An address of the key's own: from its second network now and then. */
  ip(key: TrafficKey, network = key.networks.length > 1 && this.rng.chance(key.secondaryShare) ? 1 : 0): string {
    return `${key.networks[network]}.${this.rng.pick(key.hosts[network]!)}`;
  }

  /** A call as the key's own client makes it; with `noise`, a small share fails as real clients' do. */
  call(key: TrafficKey, noise = true, ip = this.ip(key)): Call {
    const resource = this.rng.pick(RESOURCES);
    if (noise && this.rng.chance(this.shape.failureNoise)) {
      const kind = this.rng.next();
      if (kind < 0.5) return { input: { key: key.secret, ip, permissions: ['invoices:delete'], resource }, tag: 'noise', key };
      if (kind < 0.8) return { input: { key: mangle(key.secret, this.rng), ip, resource }, tag: 'noise' };
      return { input: { key: generateKey('kl'), ip, resource }, tag: 'noise' };
    }
    return { input: { key: key.secret, ip, permissions: ['invoices:read'], resource }, tag: 'ordinary', key };
  }
}
