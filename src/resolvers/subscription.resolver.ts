import { Arg, Resolver, Root, Subscription, type ResolverData } from 'type-graphql';
import { requireAnyPermission } from '../auth/auth-checker';
import { coveredBy } from '../auth/permissions';
import { keyLapsed, type GraphQLContext } from '../auth/context';
import type { AlertEntity, AuditEventEntity } from '../entities';
import { alertMatches, type AlertFilter as AlertFilterShape } from '../services/alert.service';
import { auditEventMatcher } from '../services/audit-match';
import type { AuditEventFilter as AuditFilterShape } from '../services/audit-query.service';
import { BadInputError } from '../services/errors';
import { isUuid } from '../services/validation';
import { AlertFilter } from '../schema/alert.input';
import { Alert } from '../schema/alert.type';
import { AuditEventFilter } from '../schema/audit-event.input';
import { AuditEvent } from '../schema/audit-event.type';

type SubscribeData = Pick<ResolverData<GraphQLContext>, 'context'> & { args: Record<string, unknown> };

/** Whether the operation's principal may still read the stream; re-asked for every item and at each re-check of its connection. */
function stillAllowed(context: GraphQLContext, permission: string): () => boolean {
  return () => !keyLapsed(context.principal) && coveredBy(context.principal.permissions, permission);
}

/** Registers the stream with its operation, so the connection's re-check can end it (ws.ts). */
function watched<T>(context: GraphQLContext, feed: AsyncIterableIterator<T>, allowed: () => boolean): AsyncIterableIterator<T> {
  context.streams?.push({ allowed, end: () => void feed.return?.() });
  return feed;
}

function subscribeToAlerts({ args, context }: SubscribeData) {
  requireAnyPermission(context, ['alerts:read'], 'Subscription.alertRaised');
  const filter = (args.filter ?? null) as AlertFilterShape | null;
  for (const field of ['keyId', 'userId'] as const) {
    const value = filter?.[field];
    if (value !== null && value !== undefined && !isUuid(value)) throw new BadInputError(`filter.${field}`, `filter.${field} is not an id`);
  }
  const allowed = stillAllowed(context, 'alerts:read');
  return watched(context, context.services.alerting.alertFeed.subscribe((alert) => alertMatches(alert, filter), { allowed, owner: context.principal.userId }), allowed);
}

async function subscribeToAudit({ args, context }: SubscribeData) {
  requireAnyPermission(context, ['audit:read'], 'Subscription.auditEventRecorded');
  const filter = (args.filter ?? null) as AuditFilterShape | null;
  context.services.auditQueries.validateFilter(filter);
  const matches = auditEventMatcher(filter);
  const allowed = stillAllowed(context, 'audit:read');
  // Shares are per user: a user's further keys (a rotation's successor, a new key) draw on the same.
  const feed = watched(context, context.services.alerting.auditFeed.subscribe(matches, { allowed, owner: context.principal.userId }), allowed);
  // A live tail is an audit query too: without its event, no tail (and none left registered).
  try {
    await context.services.audit.recordAlone(
      context.actor,
      { action: 'audit.query', targetType: 'audit', details: { query: 'auditEventRecorded', filter } },
    );
  } catch (error) {
    await feed.return?.();
    throw error;
  }
  return feed;
}

/**
 * Live streams over graphql-ws. The permission is checked when the subscription starts (an error
 * on that operation only: the connection stays usable) and again for every event: the connection
 * keeps its principal current (ws.ts), so a key that loses the permission, or expires, sees its
 * stream complete.
 * Filters are applied on the server.
 */
@Resolver()
export class SubscriptionResolver {
  @Subscription(() => Alert, { subscribe: subscribeToAlerts as never, description: 'New alerts as they are raised (alerts:read)' })
  alertRaised(@Root() alert: AlertEntity, @Arg('filter', () => AlertFilter, { nullable: true }) _filter?: AlertFilter | null): AlertEntity {
    return alert;
  }

  @Subscription(() => AuditEvent, { subscribe: subscribeToAudit as never, description: 'Live tail of the audit log for auditors' })
  auditEventRecorded(
    @Root() event: AuditEventEntity,
    @Arg('filter', () => AuditEventFilter, { nullable: true }) _filter?: AuditEventFilter | null,
  ): AuditEventEntity {
    return event;
  }
}
