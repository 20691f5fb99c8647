import type { DataSource } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { AuditGroupBy, assertNever } from '../entities/enums';
import { applyAuditFilter, type AuditEventFilter } from './audit-query.service';
import { GENESIS_HASH, eventHash } from './audit.service';
import { BadInputError } from './errors';


export type TimeBucketName = 'MINUTE' | 'HOUR' | 'DAY';

export interface IntegrityReport {
  ok: boolean;
  checkedEvents: number;
  firstInvalidEventId: string | null;
  headHash: string | null;
}

const NONE = '(none)';
const MAX_GROUPS = 1000;
const INTEGRITY_BATCH = 5000;

function groupColumn(groupBy: AuditGroupBy): string {
  switch (groupBy) {
    case AuditGroupBy.ACTION:
      return 'e.action';
    case AuditGroupBy.ACTOR:
      return 'e.actor_id::text';
    case AuditGroupBy.ACTOR_KEY:
      return 'e.actor_key_id::text';
    case AuditGroupBy.OUTCOME:
      return 'e.outcome';
    case AuditGroupBy.TARGET_TYPE:
      return 'e.target_type';
    case AuditGroupBy.IP:
      return 'e.ip';
    default:
      return assertNever(groupBy);
  }
}

/** Aggregates and the integrity check over the audit log; the same filter as the event list. */
export class AuditReportService {
  constructor(private readonly dataSource: DataSource) {}

  async counts(filter: AuditEventFilter | null | undefined, groupBy: AuditGroupBy, limit: number | null | undefined): Promise<Array<{ key: string; count: number }>> {
    const size = limit ?? 20;
    if (!Number.isInteger(size) || size < 1 || size > MAX_GROUPS) {
      throw new BadInputError('limit', `limit must be between 1 and ${MAX_GROUPS}`);
    }
    const column = groupColumn(groupBy);
    const query = this.dataSource.manager
      .createQueryBuilder(AuditEventEntity, 'e')
      .select(`coalesce(${column}, '${NONE}')`, 'key')
      .addSelect('count(*)::int', 'count');
    applyAuditFilter(query, filter);
    return query.groupBy('1').orderBy('count', 'DESC').addOrderBy('key', 'ASC').limit(size).getRawMany();
  }

  /** Non-empty buckets in time order; their counts add up to the filter's number of events. */
  async timeline(filter: AuditEventFilter | null | undefined, bucket: TimeBucketName): Promise<Array<{ start: Date; count: number }>> {
    const unit = { MINUTE: 'minute', HOUR: 'hour', DAY: 'day' }[bucket];
    const query = this.dataSource.manager
      .createQueryBuilder(AuditEventEntity, 'e')
      .select(`date_trunc('${unit}', e.occurred_at, 'UTC')`, 'start')
      .addSelect('count(*)::int', 'count');
    applyAuditFilter(query, filter);
    return query.groupBy('1').orderBy('1', 'ASC').limit(100_000).getRawMany();
  }

  /**
   * Recomputes every event's hash in the range from its stored fields and checks it links to the
   * event before it; reports the first event that does not match. Reads in batches: constant memory.
   */
  async integrity(from: Date | null | undefined, to: Date | null | undefined): Promise<IntegrityReport> {
    if (from && to && from.getTime() > to.getTime()) throw new BadInputError('from', 'from must not be after to');
    const manager = this.dataSource.manager;
    const range = (q: ReturnType<typeof manager.createQueryBuilder<AuditEventEntity>>) => {
      if (from) q.andWhere('e.occurred_at >= :from', { from });
      if (to) q.andWhere('e.occurred_at < :to', { to });
      return q;
    };
    let checked = 0;
    let previousHash: string | null = null;
    let afterId: string | null = null;
    for (;;) {
      const query = range(manager.createQueryBuilder(AuditEventEntity, 'e'));
      if (afterId !== null) query.andWhere('e.id > :afterId', { afterId });
      const batch = await query.orderBy('e.id', 'ASC').limit(INTEGRITY_BATCH).getMany();
      if (batch.length === 0) break;
      for (const event of batch) {
        if (previousHash === null) previousHash = await this.hashBefore(event.id);
        const { hash, ...rest } = event;
        if (event.prevHash !== previousHash || eventHash(rest) !== hash) {
          return { ok: false, checkedEvents: checked + 1, firstInvalidEventId: event.id, headHash: null };
        }
        previousHash = hash;
        checked++;
      }
      afterId = batch[batch.length - 1]!.id;
    }
    return { ok: true, checkedEvents: checked, firstInvalidEventId: null, headHash: previousHash };
  }

  /** The hash the event `id` must link to: the event before it, or what retention removed, or genesis. */
  private async hashBefore(id: string): Promise<string> {
    const [row] = (await this.dataSource.query(
      `SELECT coalesce((SELECT hash FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT 1),
                       (SELECT hash FROM audit_chain_anchors WHERE last_id < $1 ORDER BY last_id DESC LIMIT 1)) AS hash`,
      [id],
    )) as Array<{ hash: string | null }>;
    return row?.hash ?? GENESIS_HASH;
  }
}
