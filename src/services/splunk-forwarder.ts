import type { DataSource } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { splunkRecord } from './audit-export.service';

export interface SplunkForwarderOptions {
  dataSource: DataSource;
  /** The HEC endpoint, e.g. https://splunk.example:8088/services/collector/event */
  url: string;
  /** The HEC token; sent only in the Authorization header, never logged or put in an error. */
  token: string;
  batchSize?: number;
  pollIntervalMs?: number;
  /** Least time between rounds that were not full, even when woken: a busy log goes out in batches. */
  minIntervalMs?: number;
  maxBackoffMs?: number;
  /** Per POST: a collector that hangs counts as a failure instead of stalling delivery. */
  requestTimeoutMs?: number;
  /** Every failed round (refusal, network or database error); the loop itself keeps going. */
  onError?: (error: unknown) => void;
  /** The row in forwarder_cursors: one per destination. */
  name?: string;
}

export interface ForwarderLag {
  /** Events after the cursor */
  events: number;
  /** Age of the oldest of them, 0 when there are none */
  seconds: number;
}

/** A refused or failed POST. The message names the collector's origin, never the token. */
export class HecDeliveryError extends Error {
  constructor(
    message: string,
    /** HTTP status, null when the collector could not be reached */
    readonly status: number | null,
    /** HEC's JSON `code`, when the answer had one */
    readonly code: number | null,
  ) {
    super(message);
    this.name = 'HecDeliveryError';
  }
}

const INITIAL_BACKOFF_MS = 250;
const MAX_ERROR_TEXT = 200;

interface Sleeper {
  wakeable: boolean;
  done: () => void;
}

/**
 * Ships the audit trail to a Splunk HTTP Event Collector, at least once: events go out in id order
 * in batches, and the persistent cursor moves only after the collector accepted a batch, so a
 * refusal, an outage or a restart re-sends rather than loses. Each record carries the event id in
 * `fields.event_id` so the duplicates that at-least-once implies can be dropped downstream.
 *
 * Reading by `id > cursor` relies on ids becoming visible in id order (AuditService hands out ids
 * under the chain's lock, as events join the chain): a late commit of a lower id would be skipped.
 */
export class SplunkForwarder {
  private readonly dataSource: DataSource;
  private readonly url: string;
  private readonly origin: string;
  // A private field: util.inspect and JSON.stringify of the forwarder do not show it.
  readonly #token: string;
  private readonly batchSize: number;
  private readonly pollIntervalMs: number;
  private readonly minIntervalMs: number;
  private readonly maxBackoffMs: number;
  private readonly requestTimeoutMs: number;
  private readonly onError: (error: unknown) => void;
  readonly name: string;

  private loop: Promise<void> | null = null;
  private stopping = false;
  private sleeper: Sleeper | null = null;
  private wakeRequested = false;
  private cursorCreated = false;

  /** Events the collector accepted (re-sent ones count again) */
  delivered = 0;
  /** Rounds that failed: refusals, network and database errors */
  failures = 0;

  constructor(options: SplunkForwarderOptions) {
    const url = new URL(options.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('Splunk HEC url must be http or https');
    if (!options.token) throw new Error('Splunk HEC token is empty');
    this.dataSource = options.dataSource;
    this.url = url.toString();
    this.origin = url.origin;
    this.#token = options.token;
    this.batchSize = positive('batchSize', options.batchSize ?? 500);
    this.pollIntervalMs = positive('pollIntervalMs', options.pollIntervalMs ?? 1000);
    this.minIntervalMs = Math.min(this.pollIntervalMs, positive('minIntervalMs', options.minIntervalMs ?? 100));
    this.maxBackoffMs = positive('maxBackoffMs', options.maxBackoffMs ?? 30_000);
    this.requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs ?? 10_000);
    this.onError = options.onError ?? (() => {});
    this.name = options.name ?? 'splunk';
  }

  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.run();
  }

  /** Stops the loop; resolves once the delivery under way (if any) has finished and its cursor is saved. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.sleeper?.done();
    await this.loop;
    this.loop = null;
  }

  /**
   * Runs a round as soon as minIntervalMs allows instead of after the poll interval (a backoff
   * after a failure is kept). The server calls it whenever a seal commits, on any instance.
   */
  wake(): void {
    if (this.sleeper?.wakeable) this.sleeper.done();
    else this.wakeRequested = true;
  }

  /** Events not yet delivered: sealed ones after the cursor, and committed ones still waiting for their seal. */
  async lag(): Promise<ForwarderLag> {
    const [row] = (await this.dataSource.query(
      `SELECT (sealed.events + staged.events)::text AS events,
              coalesce(greatest(extract(epoch FROM now() - least(sealed.oldest, staged.oldest)), 0), 0)::float8 AS seconds
         FROM (SELECT count(*) AS events, min(e.occurred_at) AS oldest FROM audit_events e
                WHERE e.id > coalesce((SELECT last_event_id FROM forwarder_cursors WHERE name = $1), 0)) sealed,
              (SELECT count(*) AS events, min(occurred_at) AS oldest FROM audit_staging) staged`,
      [this.name],
    )) as Array<{ events: string; seconds: number }>;
    return { events: Number(row!.events), seconds: Number(row!.seconds) };
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopping) {
      let full = false;
      try {
        full = await this.round();
        attempt = 0;
      } catch (error) {
        this.failures++;
        attempt++;
        this.report(error);
        await this.sleep(this.backoff(attempt), false);
        continue;
      }
      // A full batch means more are waiting: go again at once. Otherwise a wake() during the
      // first, unwakeable part is kept for the second.
      if (!full) {
        await this.sleep(this.minIntervalMs, false);
        await this.sleep(this.pollIntervalMs - this.minIntervalMs, true);
      }
    }
  }

  /**
   * One batch: read after the cursor, POST, then move the cursor. True when the batch was full.
   * The cursor row stays locked for the round, and an instance that finds it locked skips its
   * round: with several instances forwarding, one delivers at a time and none re-sends the
   * other's batch (at-least-once remains only across a crash between POST and commit).
   */
  private async round(): Promise<boolean> {
    // A wake() from now on concerns events this round may not have seen.
    this.wakeRequested = false;
    await this.ensureCursor();
    return this.dataSource.transaction(async (tx) => {
      const [cursor] = (await tx.query('SELECT last_event_id::text AS id FROM forwarder_cursors WHERE name = $1 FOR UPDATE SKIP LOCKED', [
        this.name,
      ])) as Array<{ id: string }>;
      if (!cursor) return false;
      const events = await tx
        .createQueryBuilder(AuditEventEntity, 'e')
        .where('e.id > :after', { after: cursor.id })
        .orderBy('e.id', 'ASC')
        .limit(this.batchSize)
        .getMany();
      if (events.length === 0) return false;
      await this.post(events);
      await tx.query(`UPDATE forwarder_cursors SET last_event_id = $2::bigint, updated_at = now() WHERE name = $1`, [
        this.name,
        events[events.length - 1]!.id,
      ]);
      this.delivered += events.length;
      return events.length === this.batchSize;
    });
  }

  private async ensureCursor(): Promise<void> {
    if (this.cursorCreated) return;
    await this.dataSource.query('INSERT INTO forwarder_cursors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING', [this.name]);
    this.cursorCreated = true;
  }

  /** HEC batch format: one JSON object per line. Resolves only when the collector accepted all of it. */
  private async post(events: AuditEventEntity[]): Promise<void> {
    const body = events.map((event) => JSON.stringify(splunkRecord(event))).join('\n');
    let status: number;
    let text: string;
    try {
      const response = await fetch(this.url, {
        method: 'POST',
        headers: { authorization: `Splunk ${this.#token}`, 'content-type': 'application/json' },
        body,
        // Following a redirect would hand the token to wherever it points.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      throw new HecDeliveryError(`Splunk HEC at ${this.origin} unreachable: ${this.redact(describe(error))}`, null, null);
    }
    const answer = parseAnswer(text);
    if (status >= 200 && status < 300 && (answer.code === null || answer.code === 0)) return;
    const detail = answer.code === null ? '' : ` (code ${answer.code}${answer.text ? `: ${answer.text}` : ''})`;
    throw new HecDeliveryError(`Splunk HEC at ${this.origin} refused ${events.length} events: HTTP ${status}${this.redact(detail)}`, status, answer.code);
  }

  /** Exponential from 250 ms, capped, with jitter so instances that failed together do not retry together. */
  private backoff(attempt: number): number {
    const ceiling = Math.min(this.maxBackoffMs, INITIAL_BACKOFF_MS * 2 ** Math.min(attempt - 1, 30));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  private sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.stopping || (wakeable && this.wakeRequested)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.sleeper === sleeper) this.sleeper = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      const sleeper: Sleeper = { wakeable, done };
      this.sleeper = sleeper;
    });
  }

  private report(error: unknown): void {
    try {
      this.onError(error);
    } catch {
      // A failing error handler must not stop delivery.
    }
  }

  /** Belt and braces: a collector or proxy that echoes the request must not get the token into a message. */
  private redact(text: string): string {
    return text.split(this.#token).join('[redacted]');
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new Error(`SplunkForwarder: ${name} must be a positive number`);
  return name === 'batchSize' ? Math.floor(value) : value;
}

/** HEC answers {"text": "...", "code": n}; anything else (a proxy's HTML page) has no code. */
function parseAnswer(text: string): { code: number | null; text: string | null } {
  try {
    const parsed = JSON.parse(text) as { code?: unknown; text?: unknown };
    return {
      code: typeof parsed.code === 'number' ? parsed.code : null,
      text: typeof parsed.text === 'string' ? parsed.text.slice(0, MAX_ERROR_TEXT) : null,
    };
  } catch {
    return { code: null, text: null };
  }
}

/** fetch wraps the useful part (ECONNREFUSED, a timeout) in `cause`. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error).slice(0, MAX_ERROR_TEXT);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`.slice(0, MAX_ERROR_TEXT);
}
