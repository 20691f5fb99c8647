import { Field, ID, InputType, Int } from 'type-graphql';
import { AlertMetric, AlertSeverity, AlertStatus, AlertType } from './enums';

@InputType('AlertFilter')
export class AlertFilter {
  @Field(() => [AlertType], { nullable: true })
  types?: AlertType[] | null;

  @Field(() => AlertSeverity, { nullable: true, description: 'This severity and above' })
  minSeverity?: AlertSeverity | null;

  @Field(() => AlertStatus, { nullable: true })
  status?: AlertStatus | null;

  @Field(() => ID, { nullable: true })
  keyId?: string | null;

  @Field(() => ID, { nullable: true })
  userId?: string | null;
}

@InputType('UpdateAlertRuleInput')
export class UpdateAlertRuleInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => Int, { nullable: true })
  threshold?: number | null;

  @Field(() => Int, { nullable: true })
  windowSeconds?: number | null;

  @Field(() => AlertSeverity, { nullable: true })
  severity?: AlertSeverity | null;

  @Field(() => Boolean, { nullable: true })
  enabled?: boolean | null;
}

@InputType('CreateAlertRuleInput')
export class CreateAlertRuleInput {
  @Field(() => String)
  name: string;

  @Field(() => AlertMetric)
  metric: AlertMetric;

  @Field(() => Int)
  threshold: number;

  @Field(() => Int)
  windowSeconds: number;

  @Field(() => AlertSeverity)
  severity: AlertSeverity;

  @Field(() => ID, { nullable: true })
  keyId?: string | null;

  @Field(() => ID, { nullable: true })
  userId?: string | null;
}
