import { randomUUID } from 'node:crypto';
import { AlertMetric } from '../entities/enums';
import type { EventBus } from './event-bus';

export const DETECTOR_HITS_CHANNEL = 'keyledger_detector_hits';
/** How long a hit waits to travel with others: peers count it this much later than its instance */
const FLUSH_MS = 100;
/** Hits one flush carries of each kind: a flood of one kind (failures) cannot crowd out another (denials) */
const MAX_HITS_PER_FLUSH = 500;
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more */
const MAX_MESSAGE_BYTES = 7000;
const MAX_TEXT = 256;

type Evidence = Record<string, string | null>;

/** One input to a windowed detector (a burst or a rule), as peers replay it. */
export type SharedHit =
  | { kind: 'failure'; evidence: Evidence; keyId: string | null; ownerId: string | null; source: string | null }
  | { kind: 'denied'; operation: string | null; ip: string | null; keyId: string | null; userId: string | null }
  | { kind: 'rule'; metric: AlertMetric; keyId: string | null; userId: string | null; evidence: Evidence };

const METRICS = new Set<string>(Object.values(AlertMetric));

function text(value: unknown): value is string | null {
  return value === null || (typeof value === 'string' && value.length <= MAX_TEXT);
}

/** The fields detectors put in evidence: nothing else is taken from a peer (`constructor` once crashed them). */
const EVIDENCE_FIELDS = new Set(['code', 'ip', 'keyId', 'resource', 'operation']);

function evidence(value: unknown): value is Evidence {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.entries(value).every(([field, item]) => EVIDENCE_FIELDS.has(field) && text(item))
  );
}

/** Long texts (a verifier's resource, say) cut to what peers accept. */
function clipped(_key: string, value: unknown): unknown {
  return typeof value === 'string' && value.length > MAX_TEXT ? value.slice(0, MAX_TEXT) : value;
}

/** A peer's hit, or null for anything that is not exactly one (whoever can publish on the bus is not trusted with more). */
export function parseHit(value: unknown): SharedHit | null {
  if (typeof value !== 'object' || value === null) return null;
  const hit = value as Record<string, unknown>;
  switch (hit.kind) {
    case 'failure':
      return evidence(hit.evidence) && text(hit.keyId) && text(hit.ownerId) && text(hit.source)
        ? { kind: 'failure', evidence: hit.evidence, keyId: hit.keyId, ownerId: hit.ownerId, source: hit.source }
        : null;
    case 'denied':
      return text(hit.operation) && text(hit.ip) && text(hit.keyId) && text(hit.userId)
        ? { kind: 'denied', operation: hit.operation, ip: hit.ip, keyId: hit.keyId, userId: hit.userId }
        : null;
    case 'rule':
      return typeof hit.metric === 'string' && METRICS.has(hit.metric) && text(hit.keyId) && text(hit.userId) && evidence(hit.evidence)
        ? { kind: 'rule', metric: hit.metric as AlertMetric, keyId: hit.keyId, userId: hit.userId, evidence: hit.evidence }
        : null;
    default:
      return null;
  }
}

/**
 * The windowed detectors' hits, exchanged between instances on the event bus, so a burst split
 * across instances behind a load balancer adds up (20 failures over two instances are 20, not 10
 * each). Hits travel in batches every FLUSH_MS; a subject's hits beyond what its window keeps are
 * not sent, since peers would drop them too, and each batch is bounded. Peers count a hit when
 * it arrives; each instance raises what crosses a line, and the alert store folds duplicates.
 */
export class DetectorGossip {
  private readonly origin = randomUUID();
  private pending: string[] = [];
  private readonly sentPerSubject = new Map<string, number>();
  private readonly sentPerKind: Record<SharedHit['kind'], number> = { failure: 0, denied: 0, rule: 0 };
  private timer: NodeJS.Timeout | null = null;
  /** Hits not sent because their batch was full */
  unshared = 0;

  constructor(
    private readonly bus: EventBus,
    private readonly onError: (error: unknown) => void,
  ) {}

  listen(ingest: (hit: SharedHit) => void): void {
    this.bus.subscribe(DETECTOR_HITS_CHANNEL, (payload) => {
      let message: { origin?: unknown; hits?: unknown };
      try {
        message = JSON.parse(payload) as typeof message;
      } catch {
        return;
      }
      if (message?.origin === this.origin || !Array.isArray(message?.hits)) return;
      for (const value of message.hits.slice(0, MAX_HITS_PER_FLUSH * 3)) {
        const hit = parseHit(value);
        // Runs inside the bus client's event handler: whatever a hit does wrong must not escape there.
        try {
          if (hit) ingest(hit);
        } catch (error) {
          this.onError(error);
        }
      }
    });
  }

  /** `subject` names the window the hit lands in, which keeps its last `keep` hits. */
  share = (hit: SharedHit, subject: string, keep: number): void => {
    const sent = this.sentPerSubject.get(subject) ?? 0;
    if (sent >= keep) return;
    if (this.sentPerKind[hit.kind] >= MAX_HITS_PER_FLUSH) {
      this.unshared++;
      return;
    }
    this.sentPerSubject.set(subject, sent + 1);
    this.sentPerKind[hit.kind]++;
    this.pending.push(JSON.stringify(hit, clipped));
    if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  };

  /** Sends what waits; resolves once it is sent (or its failure reported). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const hits = this.pending;
    this.pending = [];
    this.sentPerSubject.clear();
    this.sentPerKind.failure = this.sentPerKind.denied = this.sentPerKind.rule = 0;
    const head = `{"origin":"${this.origin}","hits":[`;
    let batch: string[] = [];
    let bytes = head.length;
    const sending: Array<Promise<void>> = [];
    const send = () => {
      if (batch.length > 0) sending.push(this.bus.publish(DETECTOR_HITS_CHANNEL, `${head}${batch.join(',')}]}`).catch(this.onError));
      batch = [];
      bytes = head.length;
    };
    for (const hit of hits) {
      const size = Buffer.byteLength(hit) + 1;
      if (bytes + size + 2 > MAX_MESSAGE_BYTES) send();
      batch.push(hit);
      bytes += size;
    }
    send();
    await Promise.all(sending);
  }
}
