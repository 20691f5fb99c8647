import type { EntityManager } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { eventHash, GENESIS_HASH } from './audit.service';
import { ROLLUP_LEVELS, ceilTo, floorTo } from './audit-rollup';
import { BadInputError } from './errors';
import { EVENT_COLUMNS } from './audit-query.service';

export interface IntegrityReport {
  ok: boolean;
  checkedEvents: number;
  firstInvalidEventId: string | null;
  headHash: string | null;
  /** What is wrong, in words; null when ok */
  problem: string | null;
}

const INTEGRITY_BATCH = 5000;

interface Head {
  lastId: string | null;
  hash: string;
}

/**
 * A run of removed events that a kept event links to (or whose last is the chain head): the last
 * event's id and hash, which the kept event after the run links to, and the run's first event
 * with the hash it linked to, which the kept event before the run must still have. Anchors made
 * before entries were recorded have no firstId and entryHash.
 */
export interface Anchor {
  lastId: string;
  hash: string;
  firstId?: string;
  entryHash?: string;
}

interface Link {
  hash: string;
  /** Set when the hash is an anchor's (an event retention removed), with what is wrong with that gap, if anything */
  gap?: { lastId: string; problem: string | null };
}

/** Where a stored row's columns are NULL the anchor has no such field, as in the retention event that names it. */
function toAnchor(row: { lastId: string; hash: string; firstId: string | null; entryHash: string | null }): Anchor {
  return { lastId: row.lastId, hash: row.hash, ...(row.firstId === null ? {} : { firstId: row.firstId, entryHash: row.entryHash! }) };
}

function namesExactly(details: Record<string, unknown> | null, anchor: Anchor): boolean {
  const named = [details?.anchors, details?.carriedAnchors].flatMap((list) => (Array.isArray(list) ? (list as Array<Partial<Anchor> | null>) : []));
  return named.some(
    (n) => n !== null && typeof n === 'object' && n.lastId === anchor.lastId && n.hash === anchor.hash && n.firstId === anchor.firstId && n.entryHash === anchor.entryHash,
  );
}

const broken = (checkedEvents: number, firstInvalidEventId: string | null, problem: string): IntegrityReport => ({
  ok: false,
  checkedEvents,
  firstInvalidEventId,
  headHash: null,
  problem,
});

/**
 * Recomputes the hash chain and checks everything that could hide a change to it:
 * - every event in the range, by id (an event whose time was moved out of the range is still
 *   checked: its id lies between the range's first and last), hashes its own fields and links to
 *   the event before it;
 * - a gap retention left (an anchor) is bridged only when a sealed `audit.retention` event, itself
 *   intact, names that anchor: a row added to audit_chain_anchors by hand bridges nothing; and
 *   what precedes the gap must still be what its removed run linked to (the anchor's entry); an
 *   event among a removed run's ids was added afterwards;
 * - a check that runs to the present ends at the chain head the sealer recorded: events cut off
 *   the end are missing, not merely unchecked;
 * - no event lies beyond that head, and no id is there twice (the key is (id, occurred_at)): the
 *   server's role may INSERT, and only a seal, which moves the head with its events, should;
 * - the hourly and daily counts (`auditCounts`, `auditTimeline`) agree with the events, for the
 *   whole hours and days in the range.
 * Reads in batches: constant memory. The chain is not keyed, so one able to rewrite every event
 * from some point to the head (and the head) goes unseen here: compare `headHash` with one
 * recorded elsewhere (an export, a SIEM) for that.
 */
export class AuditIntegrity {
  /** Retention events found in the chain (or not) during this check, by id */
  private readonly retentionInChain = new Map<string, boolean>();
  /** Anchors found named (or not) during this check: a gap right below another is reached twice */
  private readonly anchorNamed = new Map<string, boolean>();

  /** `db`: a transaction's manager reads on that transaction's connection, as retention needs. */
  constructor(private readonly db: EntityManager) {}

  async check(from: Date | null | undefined, to: Date | null | undefined): Promise<IntegrityReport> {
    if (from && to && from.getTime() > to.getTime()) throw new BadInputError('from', 'from must not be after to');
    // The head first: events sealed while the check runs are after it, and not the check's business.
    const head = await this.readHead();
    const unsealed = await this.beyondHead();
    const addedByHand = (checked: number) => broken(checked, unsealed, `event ${unsealed} lies beyond the chain head: no seal wrote it, it was added by hand`);
    if (!head || head.lastId === null) {
      return unsealed ? addedByHand(0) : { ok: true, checkedEvents: 0, firstInvalidEventId: null, headHash: head?.hash ?? GENESIS_HASH, problem: null };
    }
    const toPresent = !to;
    const ids = await this.idRange(from ?? null, to ?? null, head.lastId);
    const walked = ids ? await this.walk(ids, head) : { failure: null, checked: 0, last: null };
    // Whatever the walk found lies below the head, so before such an event.
    if (walked.failure) return walked.failure;
    const { checked, last } = walked;
    if (unsealed) return addedByHand(checked);
    if (toPresent) {
      // The loop ran up to the head's id; the head event itself must be there, with the head's hash.
      const [headEvent] = (await this.db.query('SELECT hash FROM audit_events WHERE id = $1', [head.lastId])) as Array<{ hash: string }>;
      if (!headEvent) {
        return broken(checked, head.lastId, `the chain head records event ${head.lastId}, which the log no longer holds: events at its end are missing`);
      }
      if (headEvent.hash !== head.hash) return broken(checked, head.lastId, `the chain head's hash does not match event ${head.lastId}`);
    }
    const miscount = await this.countsProblem(from ?? null, to ?? null);
    if (miscount) return broken(checked, null, miscount);
    return { ok: true, checkedEvents: checked, firstInvalidEventId: null, headHash: await this.lastHashIn(ids, last), problem: null };
  }

  /** The hash of the range's own last event (what an export of the range ends with), not of the one checked past its edge. */
  private async lastHashIn(ids: { last: string } | null, walkedLast: AuditEventEntity | null): Promise<string | null> {
    if (!ids || !walkedLast || walkedLast.id === ids.last) return walkedLast?.hash ?? null;
    const [row] = (await this.db.query('SELECT hash FROM audit_events WHERE id = $1 LIMIT 1', [ids.last])) as Array<{ hash: string }>;
    return row?.hash ?? null;
  }

  /**
   * The events with ids low..high (up to the head, one more on each side), each hashed and linked
   * as check() does: for retention to know the events it is about to remove are intact (once
   * removed, nothing could tell).
   */
  async checkIds(low: string, high: string): Promise<IntegrityReport> {
    const head = await this.readHead();
    if (!head || head.lastId === null) return { ok: true, checkedEvents: 0, firstInvalidEventId: null, headHash: null, problem: null };
    const [wider] = (await this.db.query(
      `SELECT coalesce((SELECT max(id) FROM audit_events WHERE id < $1), $1)::text AS low,
              coalesce((SELECT min(id) FROM audit_events WHERE id > $2 AND id <= $3), least($2, $3))::text AS high`,
      [low, high, head.lastId],
    )) as Array<{ low: string; high: string }>;
    const { failure, checked, last } = await this.walk(wider!, head);
    return failure ?? { ok: true, checkedEvents: checked, firstInvalidEventId: null, headHash: last?.hash ?? null, problem: null };
  }

  /**
   * An event above the chain head, read in one snapshot with it: a seal moves the head in the
   * transaction that adds its events, so only a hand could have put one there.
   */
  private async beyondHead(): Promise<string | null> {
    const [row] = (await this.db.query(
      `SELECT e.id::text AS id FROM audit_events e WHERE e.id > coalesce((SELECT last_id FROM audit_chain_head), 0) ORDER BY e.id LIMIT 1`,
    )) as Array<{ id: string }>;
    return row?.id ?? null;
  }

  /**
   * Every event with an id in the range, in order: hashed, linked to what precedes it (across gaps
   * retention left), none inside a removed run, no id there twice (the key is (id, occurred_at), so
   * the table allows it; a seal never does it).
   */
  private async walk(ids: { low: string; high: string }, head: Head): Promise<{ failure: IntegrityReport | null; checked: number; last: AuditEventEntity | null }> {
    let checked = 0;
    let previous: Link | null = null;
    let last: AuditEventEntity | null = null;
    const fail = (id: string, problem: string) => ({ failure: broken(checked + 1, id, problem), checked, last });
    // Retention removed every id of a run from its first to its last: an event there came later.
    const intruder = await this.firstInRemovedRun(ids.low, ids.high);
    let afterId: string | null = null;
    for (;;) {
      // Counted over all of an id's rows, however the batch ends: an index scan in id order feeds it.
      const batch = (await this.db.query(
        `SELECT ${EVENT_COLUMNS.join(', ')}, count(*) OVER (PARTITION BY e.id) AS copies FROM audit_events e
          WHERE e.id >= $1 AND e.id <= $2${afterId === null ? '' : ' AND e.id > $3'} ORDER BY e.id LIMIT ${INTEGRITY_BATCH}`,
        afterId === null ? [ids.low, ids.high] : [ids.low, ids.high, afterId],
      )) as Array<Record<string, unknown> & { copies: string }>;
      if (batch.length === 0) break;
      for (const { copies, ...columns } of batch) {
        const event = Object.assign(new AuditEventEntity(), columns);
        if (Number(copies) > 1) return fail(event.id, `event ${event.id} is in the log more than once: all but one were added by hand`);
        if (event.id === intruder?.id) return fail(event.id, `event ${event.id} lies among the events retention removed (${intruder.run}): it was added afterwards`);
        // The first event links to what precedes the range; a gap (retention) may sit between any two.
        if (previous === null || event.prevHash !== previous.hash) previous = await this.linkBefore(event.id, head);
        if (previous.gap?.problem && event.prevHash === previous.hash) {
          return fail(event.id, `event ${event.id} follows a gap (after event ${previous.gap.lastId}) ${previous.gap.problem}`);
        }
        if (event.prevHash !== previous.hash) {
          return fail(event.id, `event ${event.id} does not link to the event before it: events between were removed or changed`);
        }
        const { hash, ...rest } = event;
        if (eventHash(rest) !== hash) return fail(event.id, `event ${event.id}'s stored hash does not match its contents`);
        previous = { hash };
        last = event;
        checked++;
      }
      afterId = batch[batch.length - 1]!.id as string;
    }
    return { failure: null, checked, last };
  }

  /** The first and last id of the events in the time range (up to the head); null when it holds none. */
  private async idRange(from: Date | null, to: Date | null, headId: string): Promise<{ low: string; high: string; last: string } | null> {
    if (!from && !to) return { low: '0', high: headId, last: headId };
    const [row] = (await this.db.query(
      `SELECT min(id)::text AS low, max(id)::text AS high FROM audit_events
        WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) AND ($2::timestamptz IS NULL OR occurred_at < $2) AND id <= $3`,
      [from, to, headId],
    )) as Array<{ low: string | null; high: string | null }>;
    if (row?.low === null || row?.low === undefined) return null;
    // One event more on each side: an edge event whose time was moved out of the range is still
    // checked. Up to the head when the range runs to the present.
    const [wider] = (await this.db.query(
      `SELECT (SELECT max(id) FROM audit_events WHERE id < $1)::text AS before,
              (SELECT min(id) FROM audit_events WHERE id > $2 AND id <= $3)::text AS after`,
      [row.low, row.high, headId],
    )) as Array<{ before: string | null; after: string | null }>;
    return { low: wider?.before ?? row.low, high: to ? (wider?.after ?? row.high!) : headId, last: to ? row.high! : headId };
  }

  /** The hash the event `id` must link to: the event before it, or one retention removed (an anchor), or genesis. */
  private async linkBefore(id: string, head: Head): Promise<Link> {
    const row = await this.rawLinkBefore(id);
    if (!row) return { hash: GENESIS_HASH };
    if (!row.anchor) return { hash: row.hash };
    return { hash: row.hash, gap: { lastId: row.lastId, problem: await this.gapProblem(row.anchor, head) } };
  }

  /**
   * What is wrong with a gap retention left, in words (to follow "a gap after event n"); null when
   * an audit.retention event names its anchor and what precedes the removed run is still what the
   * run's first event linked to. A gap right below another is checked in turn.
   */
  private async gapProblem(anchor: Anchor, head: Head): Promise<string | null> {
    for (let gap = anchor; ; ) {
      if (!(await this.retentionNames(gap, head))) {
        return gap === anchor ? 'that no audit.retention event accounts for' : `over another gap (after event ${gap.lastId}) that no audit.retention event accounts for`;
      }
      if (gap.firstId === undefined) return null; // made before anchors recorded their entry
      const below = await this.rawLinkBefore(gap.firstId);
      if ((below?.hash ?? GENESIS_HASH) !== gap.entryHash) {
        return `whose removed run (from event ${gap.firstId}) linked to a hash the log no longer holds: events before it were removed or changed`;
      }
      if (!below?.anchor) return null;
      gap = below.anchor;
    }
  }

  /** What precedes `id` in the chain as stored: the nearest event or anchor below it. */
  private async rawLinkBefore(id: string): Promise<{ lastId: string; hash: string; anchor: Anchor | null } | null> {
    const [row] = (await this.db.query(
      `SELECT before.id::text AS "lastId", hash, anchor, first_id::text AS "firstId", entry_hash AS "entryHash" FROM (
         (SELECT id, hash, false AS anchor, NULL::bigint AS first_id, NULL::text AS entry_hash FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT 1)
         UNION ALL
         (SELECT last_id, hash, true, first_id, entry_hash FROM audit_chain_anchors WHERE last_id < $1 ORDER BY last_id DESC LIMIT 1)
       ) before ORDER BY before.id DESC, anchor LIMIT 1`,
      [id],
    )) as Array<{ lastId: string; hash: string; anchor: boolean; firstId: string | null; entryHash: string | null }>;
    if (!row) return null;
    return { lastId: row.lastId, hash: row.hash, anchor: row.anchor ? toAnchor(row) : null };
  }

  /** Every anchor retention has stored, oldest first. */
  async storedAnchors(): Promise<Anchor[]> {
    const rows = (await this.db.query(
      `SELECT last_id::text AS "lastId", hash, first_id::text AS "firstId", entry_hash AS "entryHash" FROM audit_chain_anchors ORDER BY last_id`,
    )) as Array<{ lastId: string; hash: string; firstId: string | null; entryHash: string | null }>;
    return rows.map(toAnchor);
  }

  /**
   * Whether an audit.retention event in the chain names this anchor (as made by its run, or carried
   * by a later run that dropped the month holding that run's event). In the chain: after the
   * anchor, at most the head, intact, linked to what precedes it, and linked to by what follows
   * it (or it is the head). A row added by hand anywhere else names nothing. A run that committed
   * after the check began is above the head it read: the head is read again before giving up.
   */
  private async retentionNames(anchor: Anchor, head: Head): Promise<boolean> {
    const key = JSON.stringify([anchor.lastId, anchor.hash, anchor.firstId, anchor.entryHash]);
    let named = this.anchorNamed.get(key);
    if (named === undefined) this.anchorNamed.set(key, (named = await this.namedNowOrLater(anchor, head)));
    return named;
  }

  private async namedNowOrLater(anchor: Anchor, head: Head): Promise<boolean> {
    if (await this.namedBelow(anchor, head)) return true;
    const now = await this.readHead();
    return now !== undefined && now.lastId !== head.lastId && (await this.namedBelow(anchor, now));
  }

  private async readHead(): Promise<Head | undefined> {
    const [head] = (await this.db.query(`SELECT last_id::text AS "lastId", hash FROM audit_chain_head`)) as Head[];
    return head;
  }

  /** An anchor a retention run may carry: one an event in the chain names now. */
  async anchorIsNamed(anchor: Anchor): Promise<boolean> {
    const head = await this.readHead();
    return head !== undefined && head.lastId !== null && (await this.namedBelow(anchor, head));
  }

  /** Named as stored, entry included: an entry changed or cleared by hand is named by no event. */
  private async namedBelow(anchor: Anchor, head: Head): Promise<boolean> {
    const { lastId, hash } = anchor;
    const candidates = (await this.db.query(
      `SELECT id::text AS id, details FROM audit_events
        WHERE action = 'audit.retention' AND id > $1 AND id <= $2 AND (details @> $3::jsonb OR details @> $4::jsonb)
        ORDER BY audit_events.id`,
      [lastId, head.lastId, JSON.stringify({ anchors: [{ lastId, hash }] }), JSON.stringify({ carriedAnchors: [{ lastId, hash }] })],
    )) as Array<{ id: string; details: Record<string, unknown> | null }>;
    for (const { id, details } of candidates) {
      if (!namesExactly(details, anchor)) continue;
      // Each retention event is verified once a check: later runs name every anchor again.
      let inChain = this.retentionInChain.get(id);
      if (inChain === undefined) this.retentionInChain.set(id, (inChain = await this.inChain(id, head)));
      if (inChain) return true;
    }
    return false;
  }

  /**
   * The first event (by id, from low to high) inside a run retention removed, with that run; null
   * when none. Only anchors that record their run's first event bound one.
   */
  private async firstInRemovedRun(low: string, high: string): Promise<{ id: string; run: string } | null> {
    const [row] = (await this.db.query(
      `SELECT e.id::text AS id, 'events ' || a.first_id || ' to ' || a.last_id AS run
         FROM audit_chain_anchors a
         CROSS JOIN LATERAL (SELECT id FROM audit_events WHERE id BETWEEN greatest(a.first_id, $1::bigint) AND least(a.last_id, $2::bigint) ORDER BY id LIMIT 1) e
        WHERE a.first_id IS NOT NULL AND a.first_id <= $2::bigint AND a.last_id >= $1::bigint
        ORDER BY e.id LIMIT 1`,
      [low, high],
    )) as Array<{ id: string; run: string }>;
    return row ?? null;
  }

  /** Intact, outside every removed run, linked to what precedes it, and linked to by what follows it (or it is the head). */
  private async inChain(id: string, head: Head): Promise<boolean> {
    const event = await this.db.findOneBy(AuditEventEntity, { id });
    if (!event) return false;
    if (await this.firstInRemovedRun(id, id)) return false;
    const { hash: stored, ...rest } = event;
    if (eventHash(rest) !== stored) return false;
    if ((await this.rawLinkBefore(event.id))?.hash !== event.prevHash) return false;
    const [next] = (await this.db.query(
      'SELECT prev_hash AS "prevHash" FROM audit_events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT 1',
      [event.id, head.lastId],
    )) as Array<{ prevHash: string }>;
    return next ? next.prevHash === stored : event.id === head.lastId && head.hash === stored;
  }

  /**
   * The first whole hour or day in the range whose stored count (the rollups `auditCounts` and
   * `auditTimeline` read) differs from the events, in words; null when they agree. One statement
   * each, so one snapshot: the sealer writes events and counts in one transaction.
   */
  private async countsProblem(from: Date | null, to: Date | null): Promise<string | null> {
    for (const level of ROLLUP_LEVELS) {
      const start = from && ceilTo(from, level.millis);
      const end = to && floorTo(to, level.millis);
      if (start && end && start.getTime() >= end.getTime()) continue;
      const [row] = (await this.db.query(
        `WITH events AS (
           SELECT date_trunc('${level.unit}', occurred_at, 'UTC') AS bucket, action, outcome, coalesce(target_type, '') AS target_type, count(*) AS n
             FROM audit_events
            WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) AND ($2::timestamptz IS NULL OR occurred_at < $2)
            GROUP BY 1, 2, 3, 4
         ), counted AS (
           SELECT ${level.column} AS bucket, action, outcome, coalesce(target_type, '') AS target_type, count AS n
             FROM ${level.table}
            WHERE ($1::timestamptz IS NULL OR ${level.column} >= $1) AND ($2::timestamptz IS NULL OR ${level.column} < $2)
         )
         SELECT coalesce(e.bucket, c.bucket) AS bucket, coalesce(e.action, c.action) AS action, coalesce(e.n, 0)::text AS events, coalesce(c.n, 0)::text AS counted
           FROM events e FULL JOIN counted c
             ON e.bucket = c.bucket AND e.action = c.action AND e.outcome = c.outcome AND e.target_type = c.target_type
          WHERE coalesce(e.n, 0) <> coalesce(c.n, 0)
          ORDER BY 1 LIMIT 1`,
        [start, end],
      )) as Array<{ bucket: Date; action: string; events: string; counted: string }>;
      if (row) {
        return `the ${level.unit} from ${row.bucket.toISOString()} counts ${row.counted} ${row.action} events, the log holds ${row.events}`;
      }
    }
    return null;
  }
}
