import type { AuditEventEntity } from '../entities';
import type { AuditEventFilter } from './audit-query.service';
import { inNetworks, networkList, parseCidr, lowerCaseUuid } from './validation';

/** jsonb `@>` semantics: objects by key, arrays by "every wanted element is in some element", scalars by equality. */
export function jsonContains(value: unknown, wanted: unknown): boolean {
  if (Array.isArray(wanted)) {
    return Array.isArray(value) && wanted.every((w) => value.some((v) => jsonContains(v, w)));
  }
  if (wanted !== null && typeof wanted === 'object') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
    return Object.entries(wanted).every(([k, w]) => Object.hasOwn(value, k) && jsonContains((value as Record<string, unknown>)[k], w));
  }
  return value === wanted;
}

/** What a filter looks at in an event: known before the event is sealed. */
export type MatchableEvent = Pick<
  AuditEventEntity,
  'actorId' | 'actorKeyId' | 'action' | 'outcome' | 'targetType' | 'targetId' | 'ip' | 'occurredAt' | 'details'
>;

/**
 * The same filter as the auditEvents query, compiled to a predicate over one event, for live
 * tails and for readers deciding whether an unsealed event concerns them (validated beforehand by
 * applyAuditFilter, so bad input is already refused).
 */
export function auditEventMatcher(filter: AuditEventFilter | null | undefined): (event: MatchableEvent) => boolean {
  if (!filter) return () => true;
  const exact = new Set<string>();
  const prefixes: string[] = [];
  let anyAction = !filter.actions || filter.actions.length === 0;
  for (const action of filter.actions ?? []) {
    if (action === '*') anyAction = true;
    else if (action.endsWith('.*')) prefixes.push(action.slice(0, -1));
    else exact.add(action);
  }
  const network = filter.ip ? networkList([parseCidr(filter.ip)!]) : null;
  // uuid columns compare regardless of case; events carry them as PostgreSQL prints them (lower).
  const actorId = filter.actorId?.toLowerCase();
  const actorKeyId = filter.actorKeyId?.toLowerCase();
  const targetId = filter.targetId ? lowerCaseUuid(filter.targetId) : null;
  return (e) =>
    (!actorId || e.actorId?.toLowerCase() === actorId) &&
    (!actorKeyId || e.actorKeyId?.toLowerCase() === actorKeyId) &&
    (anyAction || exact.has(e.action) || prefixes.some((p) => e.action.startsWith(p))) &&
    (!filter.outcome || e.outcome === filter.outcome) &&
    (!filter.targetType || e.targetType === filter.targetType) &&
    (!targetId || e.targetId === targetId) &&
    (!network || inNetworks(network, e.ip)) &&
    (!filter.from || e.occurredAt.getTime() >= filter.from.getTime()) &&
    (!filter.to || e.occurredAt.getTime() < filter.to.getTime()) &&
    (!filter.detailsContains || jsonContains(e.details, filter.detailsContains));
}
