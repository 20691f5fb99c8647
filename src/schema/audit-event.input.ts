import { Field, ID, InputType } from 'type-graphql';
import { AuditOutcome } from './enums';
import { DateTimeISO, JSONObject } from './scalars';

@InputType('AuditEventFilter')
export class AuditEventFilter {
  @Field(() => ID, { nullable: true })
  actorId?: string | null;

  @Field(() => ID, { nullable: true })
  actorKeyId?: string | null;

  @Field(() => [String], { nullable: true, description: 'Exact actions, or prefixes ending in .* such as key.*' })
  actions?: string[] | null;

  @Field(() => AuditOutcome, { nullable: true })
  outcome?: AuditOutcome | null;

  @Field(() => String, { nullable: true })
  targetType?: string | null;

  @Field(() => String, { nullable: true })
  targetId?: string | null;

  @Field(() => String, { nullable: true, description: 'An address or a CIDR' })
  ip?: string | null;

  @Field(() => DateTimeISO, { nullable: true })
  from?: Date | null;

  @Field(() => DateTimeISO, { nullable: true })
  to?: Date | null;

  @Field(() => JSONObject, { nullable: true, description: 'Events whose details contain this object (JSON containment)' })
  detailsContains?: Record<string, unknown> | null;
}
