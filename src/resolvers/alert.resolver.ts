import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import type { AlertEntity, AlertRuleEntity } from '../entities';
import { cursorFor } from '../services/pagination';
import { AlertFilter, CreateAlertRuleInput, UpdateAlertRuleInput } from '../schema/alert.input';
import { Alert, AlertConnection, AlertRule } from '../schema/alert.type';
import { ApiKey } from '../schema/api-key.type';
import { toConnection } from '../schema/connection.type';
import { JSONObject } from '../schema/scalars';
import { User } from '../schema/user.type';
import { canReadKey, visibleUser } from './visibility';

@Resolver(() => AlertRule)
export class AlertRuleResolver {
  @Authorized('alerts:read')
  @Query(() => [AlertRule])
  alertRules(@Ctx() ctx: GraphQLContext): Promise<AlertRuleEntity[]> {
    return ctx.services.alerting.rules.list();
  }

  @Authorized('alerts:write')
  @Mutation(() => AlertRule)
  createAlertRule(@Arg('input', () => CreateAlertRuleInput) input: CreateAlertRuleInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.alerting.rules.create(ctx.actor, input);
  }

  @Authorized('alerts:write')
  @Mutation(() => AlertRule)
  updateAlertRule(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateAlertRuleInput) input: UpdateAlertRuleInput,
    @Ctx() ctx: GraphQLContext,
  ) {
    return ctx.services.alerting.rules.update(ctx.actor, id, input);
  }

  @Authorized('alerts:write')
  @Mutation(() => Boolean)
  deleteAlertRule(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.alerting.rules.delete(ctx.actor, id);
  }
}

@Resolver(() => Alert)
export class AlertResolver {
  @Authorized('alerts:read')
  @Query(() => AlertConnection)
  async alerts(
    @Ctx() ctx: GraphQLContext,
    @Arg('filter', () => AlertFilter, { nullable: true }) filter?: AlertFilter | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: 50 }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ) {
    const page = await ctx.services.alerting.alerts.list(filter, first, after);
    return toConnection(page.rows, page.hasNextPage, cursorFor('a'), page.totalCount);
  }

  @Authorized('alerts:write')
  @Mutation(() => Alert)
  acknowledgeAlert(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.alerting.alerts.acknowledge(ctx.actor, id);
  }

  @Authorized('alerts:write')
  @Mutation(() => Alert)
  resolveAlert(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.alerting.alerts.resolve(ctx.actor, id);
  }

  @FieldResolver(() => JSONObject, { nullable: true })
  details(@Root() alert: AlertEntity): Record<string, unknown> {
    return { ...(alert.details ?? {}), repeats: alert.repeatCount, lastSeenAt: alert.lastSeenAt.toISOString() };
  }

  /** The key, when the caller may read that key; null otherwise. */
  @FieldResolver(() => ApiKey, { nullable: true })
  async key(@Root() alert: AlertEntity, @Ctx() ctx: GraphQLContext) {
    const key = alert.keyId ? await ctx.loaders.keyById.load(alert.keyId) : null;
    return key && (await canReadKey(ctx, key)) ? key : null;
  }

  @FieldResolver(() => User, { nullable: true })
  user(@Root() alert: AlertEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, alert.userId, 'Alert.user');
  }

  @FieldResolver(() => AlertRule, { nullable: true })
  rule(@Root() alert: AlertEntity, @Ctx() ctx: GraphQLContext) {
    return alert.ruleId ? ctx.loaders.alertRuleById.load(alert.ruleId) : null;
  }

  @FieldResolver(() => User, { nullable: true })
  acknowledgedBy(@Root() alert: AlertEntity, @Ctx() ctx: GraphQLContext) {
    return visibleUser(ctx, alert.acknowledgedById, 'Alert.acknowledgedBy');
  }
}
