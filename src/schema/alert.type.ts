import { Field, ID, Int, ObjectType } from 'type-graphql';
import { connectionTypes } from './connection.type';
import { AlertMetric, AlertSeverity, AlertStatus, AlertType } from './enums';
import { DateTimeISO, JSONObject } from './scalars';

@ObjectType('AlertRule')
export class AlertRule {
  @Field(() => ID)
  id: string;

  @Field(() => String)
  name: string;

  @Field(() => AlertMetric)
  metric: AlertMetric;

  @Field(() => Int, { description: "Raise when the metric's count within the window reaches this number" })
  threshold: number;

  @Field(() => Int)
  windowSeconds: number;

  @Field(() => AlertSeverity)
  severity: AlertSeverity;

  @Field(() => ID, { nullable: true, description: 'Scope: one key, one user, or everything when both are null' })
  keyId: string | null;

  @Field(() => ID, { nullable: true })
  userId: string | null;

  @Field(() => Boolean)
  enabled: boolean;

  @Field(() => DateTimeISO)
  createdAt: Date;
}

@ObjectType('Alert')
export class Alert {
  @Field(() => ID)
  id: string;

  @Field(() => AlertType)
  type: AlertType;

  @Field(() => AlertSeverity)
  severity: AlertSeverity;

  @Field(() => AlertStatus)
  status: AlertStatus;

  @Field(() => String)
  message: string;

  @Field(() => JSONObject, {
    nullable: true,
    description: 'Why it fired: window, observed value, baseline or threshold, a sample of the evidence, and repeats',
  })
  details: Record<string, unknown> | null;

  @Field(() => DateTimeISO)
  createdAt: Date;

  @Field(() => DateTimeISO, { nullable: true })
  acknowledgedAt: Date | null;

  @Field(() => DateTimeISO, { nullable: true })
  resolvedAt: Date | null;

  // Relations, resolved by AlertResolver under the caller's read rights
  keyId: string | null;
  userId: string | null;
  ruleId: string | null;
  acknowledgedById: string | null;
}

export const AlertConnection = connectionTypes('Alert', Alert, true);
