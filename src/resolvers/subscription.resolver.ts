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

function subscribeToAlerts({ args, context }: SubscribeData) {
  requireAnyPermission(context, ['alerts:read'], 'Subscription.alertRaised');
  const filter = (args.filter ?? null) as AlertFilterShape | null;
  for (const field of ['keyId', 'userId'] as const) {
    const value = filter?.[field];
    if (value !== null && value !== undefined && !isUuid(value)) throw new BadInputError(`filter.${field}`, `filter.${field} is not an id`);
  }
  return context.services.alerting.alertFeed.subscribe((alert) => alertMatches(alert, filter), {
    allowed: () => !keyLapsed(context.principal) && coveredBy(context.principal.permissions, 'alerts:read'),
  });
}

async function subscribeToAudit({ args, context }: SubscribeData) {
  requireAnyPermission(context, ['audit:read'], 'Subscription.auditEventRecorded');
  const filter = (args.filter ?? null) as AuditFilterShape | null;
  context.services.auditQueries.validateFilter(filter);
  const matches = auditEventMatcher(filter);
  const feed = context.services.alerting.auditFeed.subscribe(matches, {
    allowed: () => !keyLapsed(context.principal) && coveredBy(context.principal.permissions, 'audit:read'),
    owner: context.principal.keyId,
  });
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
