import type { DataSource, EntityManager } from 'typeorm';
import type { VerifyCode } from '../entities/enums';
import { BadInputError } from './errors';

export interface UsageRecord {
  /** Epoch milliseconds: no Date per verification on the hot path */
  occurredAt: number;
  keyId: string | null;
  ownerId: string | null;
  code: VerifyCode;
  ip: string | null;
  resource: string | null;
}

export type Bucket = 'MINUTE' | 'HOUR' | 'DAY';

const FLUSH_INTERVAL_MS = 200;
const FLUSH_BATCH = 2000;
/** Past this many unflushed records, producers wait for a flush (backpressure). */
const HIGH_WATER = 50_000;
/** Past this many (the database refusing writes for a while), new ones are dropped and counted rather than growing memory. */
const MAX_BUFFERED = 200_000;
export const MAX_RANGE_POINTS = 10_000;
const MAX_ATTEMPTS = 5;
const BUCKET_SECONDS: Record<Bucket, number> = { MINUTE: 60, HOUR: 3600, DAY: 86_400 };

/** A usage series' range: `to` defaults to now and `from` to a day before `to`. */
export function seriesWindow(from: Date | null | undefined, to: Date | null | undefined): { from: Date; to: Date } {
  const end = to ?? new Date();
  return { from: from ?? new Date(end.getTime() - 86_400_000), to: end };
}

/** Refuses a range a series cannot answer: empty or backwards, or more than MAX_RANGE_POINTS buckets. */
export function assertSeriesRange(from: Date, to: Date, bucket: Bucket): void {
  if (from.getTime() >= to.getTime()) throw new BadInputError('from', 'from must be before to');
  if ((to.getTime() - from.getTime()) / 1000 / BUCKET_SECONDS[bucket] > MAX_RANGE_POINTS) {
    throw new BadInputError('bucket', `at most ${MAX_RANGE_POINTS} buckets: choose a larger bucket or a shorter range`);
  }
}

/**
 * A PostgreSQL array literal, several times cheaper than the driver's element escaping: numbers,
 * uuids, codes and canonical addresses stand bare, anything else is quoted. A batch repeats few
 * distinct strings (its keys, owners, codes, callers), so each is checked once.
 */
function arrayLiteral(values: ReadonlyArray<string | number | null>): string {
  const bare = new Set<string>();
  let literal = '{';
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    if (i > 0) literal += ',';
    if (value === null) literal += 'NULL';
    else if (typeof value === 'number' || bare.has(value)) literal += value;
    else if (BARE_ELEMENT.test(value)) {
      bare.add(value);
      literal += value;
    } else literal += quoteElement(value);
  }
  return `${literal}}`;
}

const secondOf = (epochMs: number) => Math.floor(epochMs / 1000);

/** What may stand unquoted in an array literal; anything else (never expected here) is quoted. */
const BARE_ELEMENT = /^(?!null$)[0-9A-Za-z][0-9A-Za-z.:%_-]*$/i;

function quoteElement(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * Buffered records held column by column: one small array per field instead of an object per
 * verification, so what waits for the next flush is mostly numbers and shared strings, and the
 * columns go to the INSERT as they are. A record identical to its key's previous one (caller,
 * code, resource) in the same second only adds to that row's count, and the row keeps its first
 * record's time: a busy key writes a row per second per flush, not one per verification. Since a
 * row never spans a second, minute, hour and day counts stay exact; a range bounded inside a
 * second can count a merged record at the time of an identical one earlier in that second
 * (normally within one 200 ms flush; longer only while the database is slow or refusing).
 */
class UsageColumns {
  readonly occurredAt: number[] = [];
  readonly keyId: Array<string | null> = [];
  readonly ownerId: Array<string | null> = [];
  readonly code: VerifyCode[] = [];
  readonly ip: Array<string | null> = [];
  readonly resource: Array<string | null> = [];
  readonly occurrences: number[] = [];
  /** Each row's latest record (lastUsedAt) */
  readonly lastAt: number[] = [];
  /** Records held, counting each merged one */
  records = 0;
  /** Each key's latest row (keyless records under the empty string) */
  private readonly latestRow = new Map<string, number>();

  /** Rows held */
  get length(): number {
    return this.occurredAt.length;
  }

  push(entry: UsageRecord, occurrences = 1, lastAt = entry.occurredAt): void {
    this.records += occurrences;
    const key = entry.keyId ?? '';
    const row = this.latestRow.get(key);
    if (
      row !== undefined &&
      secondOf(this.occurredAt[row]!) === secondOf(entry.occurredAt) &&
      this.code[row] === entry.code &&
      this.ip[row] === entry.ip &&
      this.resource[row] === entry.resource &&
      this.ownerId[row] === entry.ownerId
    ) {
      this.occurrences[row]! += occurrences;
      if (lastAt > this.lastAt[row]!) this.lastAt[row] = lastAt;
      return;
    }
    this.latestRow.set(key, this.occurredAt.length);
    this.occurredAt.push(entry.occurredAt);
    this.keyId.push(entry.keyId);
    this.ownerId.push(entry.ownerId);
    this.code.push(entry.code);
    this.ip.push(entry.ip);
    this.resource.push(entry.resource);
    this.occurrences.push(occurrences);
    this.lastAt.push(lastAt);
  }

  at(i: number): UsageRecord {
    return {
      occurredAt: this.occurredAt[i]!,
      keyId: this.keyId[i]!,
      ownerId: this.ownerId[i]!,
      code: this.code[i]!,
      ip: this.ip[i]!,
      resource: this.resource[i]!,
    };
  }

  /** These records, then `later`'s, at most `max` in all */
  followedBy(later: UsageColumns, max: number): UsageColumns {
    const out = new UsageColumns();
    for (const source of [this, later]) {
      for (let i = 0; i < source.length && out.records < max; i++) {
        out.push(source.at(i), Math.min(source.occurrences[i]!, max - out.records), source.lastAt[i]);
      }
    }
    return out;
  }
}

/**
 * Verifications are usage, not audit events: buffered in memory and written in multi-row batches
 * off the request path. On kill -9 at most one flush interval of records is lost; close() flushes all.
 */
export class UsageService {
  private buffer = new UsageColumns();
  private flushing: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  dropped = 0;
  written = 0;
  private failedAttempts = 0;

  constructor(
    private readonly dataSource: DataSource,
    private readonly onError: (error: unknown) => void = () => {},
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  record(entry: UsageRecord): void {
    if (this.buffer.records >= MAX_BUFFERED) {
      this.dropped++;
      return;
    }
    this.buffer.push(entry);
    // One flush at a time is asked for: a call per record while one runs would only queue promises.
    if (this.buffer.length >= FLUSH_BATCH && !this.flushing) void this.flush();
  }

  /** Writes everything buffered so far; concurrent callers share one flush. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = new UsageColumns();
    this.flushing = this.write(batch)
      .then(() => {
        this.failedAttempts = 0;
        this.written += batch.records;
      })
      .catch((error: unknown) => {
        this.onError(error);
        // Put the batch back so a passing database error loses nothing, but never let one bad
        // batch block every later record: after a few attempts it is dropped (and counted).
        if (++this.failedAttempts < MAX_ATTEMPTS) this.buffer = batch.followedBy(this.buffer, MAX_BUFFERED);
        else {
          this.dropped += batch.records;
          this.failedAttempts = 0;
        }
      })
      .finally(() => {
        this.flushing = null;
      });
    await this.flushing;
  }

  /** Records waiting (a row may hold several) */
  get buffered(): number {
    return this.buffer.records;
  }

  /** True when producers should wait for `drained()` before recording more. */
  get saturated(): boolean {
    return this.buffer.records >= HIGH_WATER;
  }

  /** Waits for one flush (a failing database does not hold producers longer than one attempt). */
  async drained(): Promise<void> {
    await this.flush();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  /** One transaction, so a batch retried after a failure is never counted twice. */
  private write(batch: UsageColumns): Promise<void> {
    return this.dataSource.transaction((tx) => this.writeIn(tx, batch));
  }

  private async writeIn(tx: EntityManager, batch: UsageColumns): Promise<void> {
    await tx.query(
      `INSERT INTO usage_events (occurred_at, key_id, owner_id, code, ip, resource, occurrences)
       SELECT to_timestamp(t / 1000.0), k, o, c, i, r, n
         FROM unnest($1::float8[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[]) AS u(t, k, o, c, i, r, n)`,
      [batch.occurredAt, batch.keyId, batch.ownerId, batch.code, batch.ip, batch.resource, batch.occurrences].map(arrayLiteral),
    );
    // lastUsedAt/lastUsedIp and the owner's lastActiveAt: one statement each per batch, newest valid use.
    const newest = new Map<string, number>();
    for (let i = 0; i < batch.length; i++) {
      const keyId = batch.keyId[i];
      if (keyId && batch.code[i] === 'VALID') newest.set(keyId, i);
    }
    const latest = new Map([...newest].map(([keyId, i]) => [keyId, { ...batch.at(i), occurredAt: batch.lastAt[i]! }]));
    if (latest.size === 0) return;
    // Rows are updated in id order so concurrent instances' batches cannot deadlock, and users
    // before keys, the order the mutations lock them in (revokeAllApiKeys: the user, then its keys).
    const rows = [...latest.values()].sort((a, b) => (a.keyId! < b.keyId! ? -1 : 1));
    const owners = new Map([...rows].sort((a, b) => (a.ownerId! < b.ownerId! ? -1 : 1)).map((r) => [r.ownerId!, new Date(r.occurredAt)]));
    await tx.query(
      `UPDATE users u SET last_active_at = v.t
         FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, t)
        WHERE u.id = v.id AND (u.last_active_at IS NULL OR u.last_active_at < v.t)`,
      [[...owners.keys()], [...owners.values()]],
    );
    await tx.query(
      `UPDATE api_keys k SET last_used_at = v.t, last_used_ip = v.ip
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS v(id, t, ip)
        WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.t)`,
      [rows.map((r) => r.keyId), rows.map((r) => new Date(r.occurredAt)), rows.map((r) => r.ip)],
    );
  }

  /** Valid and invalid verifications per bucket for one key, empty buckets included. */
  async series(keyId: string, from: Date, to: Date, bucket: Bucket): Promise<Array<{ start: Date; valid: number; invalid: number }>> {
    const seconds = BUCKET_SECONDS[bucket];
    assertSeriesRange(from, to, bucket);
    await this.flush();
    const rows = (await this.dataSource.query(
      `WITH buckets AS (
         SELECT generate_series(to_timestamp(floor(extract(epoch FROM $2::timestamptz) / $4) * $4),
                                $3::timestamptz - interval '1 microsecond', make_interval(secs => $4)) AS start
       )
       SELECT b.start,
              coalesce(sum(u.occurrences) FILTER (WHERE u.code = 'VALID'), 0)::int AS valid,
              coalesce(sum(u.occurrences) FILTER (WHERE u.code <> 'VALID'), 0)::int AS invalid
         FROM buckets b
         LEFT JOIN usage_events u
           ON u.key_id = $1 AND u.occurred_at >= greatest(b.start, $2) AND u.occurred_at < least(b.start + make_interval(secs => $4), $3)
        GROUP BY b.start ORDER BY b.start`,
      [keyId, from, to, seconds],
    )) as Array<{ start: Date; valid: number; invalid: number }>;
    return rows;
  }

  /**
   * Per-key valid/invalid counts over [from, to): the basis for reporting and invoicing. Owners'
   * usage is their keys' usage (a key's owner never changes), read through the key index.
   */
  async report(from: Date, to: Date, ownerIds: string[] | null): Promise<Array<{ keyId: string; valid: number; invalid: number }>> {
    if (from.getTime() >= to.getTime()) throw new BadInputError('from', 'from must be before to');
    await this.flush();
    return (await this.dataSource.query(
      `SELECT key_id AS "keyId",
              coalesce(sum(occurrences) FILTER (WHERE code = 'VALID'), 0)::int AS valid,
              coalesce(sum(occurrences) FILTER (WHERE code <> 'VALID'), 0)::int AS invalid
         FROM usage_events
        WHERE key_id IS NOT NULL AND occurred_at >= $1 AND occurred_at < $2
          AND ($3::uuid[] IS NULL OR key_id IN (SELECT id FROM api_keys WHERE owner_id = ANY($3::uuid[])))
        GROUP BY key_id ORDER BY key_id`,
      [from, to, ownerIds],
    )) as Array<{ keyId: string; valid: number; invalid: number }>;
  }
}
