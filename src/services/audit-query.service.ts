import type { DataSource } from 'typeorm';
import { AuditEventEntity } from '../entities';
import type { AuditOutcome } from '../entities/enums';
import { BadInputError } from './errors';
import { cursorCheck, pageSize, type Page } from './pagination';
import type { ReadPlan, SqlPart } from './read-plan';
import { coversMappedIpv4, isUuid, parseCidr, lowerCaseUuid } from './validation';
import { quoteInput } from '../auth/key-format';
import { SEAL_BATCH } from './audit.service';
import { SqlConditions } from './sql-conditions';

export interface AuditEventFilter {
  actorId?: string | null;
  actorKeyId?: string | null;
  actions?: string[] | null;
  outcome?: AuditOutcome | null;
  targetType?: string | null;
  targetId?: string | null;
  ip?: string | null;
  from?: Date | null;
  to?: Date | null;
  detailsContains?: Record<string, unknown> | null;
}

export type Order = 'ASC' | 'DESC';

const ACTION_PATTERN = /^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$|^\*$/;

const MAX_BIGINT = 9223372036854775807n;

function isBigint(text: string): boolean {
  return /^\d{1,19}$/.test(text) && BigInt(text) <= MAX_BIGINT;
}

/** Audit cursors are the event's sequence number: ids only grow, so paging is stable while events arrive. */
export function encodeAuditCursor(id: string): string {
  return Buffer.from(`ae:${id}:${cursorCheck('ae', id)}`).toString('base64url');
}

function decodeAuditCursor(cursor: string | null | undefined): string | null {
  if (cursor === null || cursor === undefined) return null;
  const match = /^ae:(\d{1,19}):([0-9a-z]{1,7})$/.exec(Buffer.from(cursor.slice(0, 100), 'base64url').toString('utf8'));
  if (!match || !isBigint(match[1]!) || match[2] !== cursorCheck('ae', match[1]!)) {
    throw new BadInputError('after', 'after is not a cursor returned by this API for this list');
  }
  return match[1]!;
}

/** Exact actions and `prefix.*` patterns, OR-ed; `*` alone means every action. */
function applyActions(query: SqlConditions, actions: readonly string[]): void {
  if (actions.length > 50) throw new BadInputError('filter.actions', 'at most 50 actions');
  const exact: string[] = [];
  const prefixes: string[] = [];
  for (const action of actions) {
    if (!ACTION_PATTERN.test(action)) {
      throw new BadInputError('filter.actions', `${JSON.stringify(quoteInput(action, 60))} is not an action or a prefix such as key.*`);
    }
    if (action.endsWith('.*')) prefixes.push(action.slice(0, -1));
    else if (action !== '*') exact.push(action);
  }
  if (actions.includes('*')) return;
  const clauses = [
    ...(exact.length > 0 ? ['e.action = ANY(:exactActions)'] : []),
    ...prefixes.map((_, i) => `e.action LIKE :actionPrefix${i}`),
  ];
  query.andWhere(`(${clauses.join(' OR ')})`, {
    exactActions: exact,
    ...Object.fromEntries(prefixes.map((p, i) => [`actionPrefix${i}`, `${p.replace(/_/g, '\\_')}%`])),
  });
}

export function applyAuditFilter(query: SqlConditions, filter: AuditEventFilter | null | undefined): void {
  if (!filter) return;
  const uuidOrNothing = (field: 'actorId' | 'actorKeyId', column: string) => {
    const value = filter[field];
    if (value === null || value === undefined) return;
    if (!isUuid(value)) query.andWhere('false');
    else query.andWhere(`e.${column} = :${field}`, { [field]: value });
  };
  uuidOrNothing('actorId', 'actor_id');
  uuidOrNothing('actorKeyId', 'actor_key_id');
  if (filter.actions && filter.actions.length > 0) applyActions(query, filter.actions);
  if (filter.outcome) query.andWhere('e.outcome = :outcome', { outcome: filter.outcome });
  if (filter.targetType) query.andWhere('e.target_type = :targetType', { targetType: filter.targetType });
  if (filter.targetId) query.andWhere('e.target_id = :targetId', { targetId: lowerCaseUuid(filter.targetId) });
  if (filter.ip !== null && filter.ip !== undefined) {
    const cidr = parseCidr(filter.ip);
    if (!cidr) throw new BadInputError('filter.ip', 'filter.ip must be an IPv4 or IPv6 address or CIDR');
    // IPv4 addresses are stored as IPv4: an IPv6 network holding all the mapped ones holds them too.
    query.andWhere(coversMappedIpv4(cidr) ? '(e.ip::inet <<= :cidr::inet OR family(e.ip::inet) = 4)' : 'e.ip::inet <<= :cidr::inet', { cidr });
  }
  if (filter.from && filter.to && filter.from.getTime() > filter.to.getTime()) {
    throw new BadInputError('filter.from', 'filter.from must not be after filter.to');
  }
  if (filter.from) query.andWhere('e.occurred_at >= :from', { from: filter.from });
  if (filter.to) query.andWhere('e.occurred_at < :to', { to: filter.to });
  if (filter.detailsContains) {
    if (typeof filter.detailsContains !== 'object' || Array.isArray(filter.detailsContains)) {
      throw new BadInputError('filter.detailsContains', 'filter.detailsContains must be a JSON object');
    }
    const details = JSON.stringify(filter.detailsContains);
    if (details.includes('\\u0000')) throw new BadInputError('filter.detailsContains', 'filter.detailsContains must not contain NUL characters');
    query.andWhere('e.details @> :details::jsonb', { details });
  }
}

export class AuditQueryService {
  constructor(private readonly dataSource: DataSource) {}

  /** Refuses a bad filter exactly as a query would (BAD_USER_INPUT), without running one. */
  validateFilter(filter: AuditEventFilter | null | undefined): void {
    applyAuditFilter(new SqlConditions(), filter);
  }

  /**
   * Sealed events with ids from..to, in order: what one seal pass appended, so never more than one
   * pass holds (whoever may NOTIFY could announce a range of the whole log).
   */
  range(from: string, to: string): Promise<AuditEventEntity[]> {
    if (!isBigint(from) || !isBigint(to)) return Promise.resolve([]);
    return this.dataSource.manager
      .createQueryBuilder(AuditEventEntity, 'e')
      .where('e.id BETWEEN :from AND :to', { from, to })
      .orderBy('e.id', 'ASC')
      .limit(SEAL_BATCH)
      .getMany();
  }

  async findById(id: string): Promise<AuditEventEntity | null> {
    if (!isBigint(id)) return null;
    return this.dataSource.manager.findOneBy(AuditEventEntity, { id });
  }

  /** Events in id order after the cursor, one more than the page to tell whether another follows. */
  listPlan(
    filter: AuditEventFilter | null | undefined,
    first: number | null | undefined,
    after: string | null | undefined,
    order: Order,
  ): ReadPlan<Omit<Page<AuditEventEntity>, 'totalCount'>> {
    const size = pageSize(first);
    const afterId = decodeAuditCursor(after);
    const where = new SqlConditions();
    applyAuditFilter(where, filter);
    if (afterId !== null) where.andWhere(order === 'DESC' ? 'e.id < :afterId' : 'e.id > :afterId', { afterId });
    return {
      sql: `SELECT ${EVENT_COLUMNS.join(', ')} FROM audit_events e ${where.where} ORDER BY e.id ${order === 'ASC' ? 'ASC' : 'DESC'} LIMIT ${size + 1}`,
      params: where.params,
      order: `r.id ${order}`,
      marker: 'id',
      finish: (rows) => ({
        rows: rows.slice(0, size).map((row) => Object.assign(new AuditEventEntity(), row)),
        hasNextPage: rows.length > size,
      }),
    };
  }

  /** The staging ids (column `id`) of events the filter matches that are committed but not yet sealed, so not yet readable. */
  stagedMatch(filter: AuditEventFilter | null | undefined): SqlPart {
    const where = new SqlConditions();
    applyAuditFilter(where, filter);
    return { sql: `SELECT e.id AS id FROM audit_staging e ${where.where}`, params: where.params };
  }
}

/** An event row with the entity's property names (audit_staging has the same columns, less the chain's). */
export const EVENT_COLUMNS = [
  'e.id AS id',
  'e.occurred_at AS "occurredAt"',
  'e.action AS action',
  'e.outcome AS outcome',
  'e.actor_type AS "actorType"',
  'e.actor_id AS "actorId"',
  'e.actor_key_id AS "actorKeyId"',
  'e.target_type AS "targetType"',
  'e.target_id AS "targetId"',
  'e.ip AS ip',
  'e.user_agent AS "userAgent"',
  'e.request_id AS "requestId"',
  'e.details AS details',
  'e.prev_hash AS "prevHash"',
  'e.hash AS hash',
];
