import { Field, ID, Int, ObjectType } from 'type-graphql';
import { connectionTypes } from './connection.type';
import { ActorType, AuditOutcome } from './enums';
import { DateTimeISO, JSONObject } from './scalars';

@ObjectType('AuditEvent')
export class AuditEvent {
  @Field(() => ID, { description: 'Monotonically increasing sequence number' })
  id: string;

  @Field(() => DateTimeISO)
  occurredAt: Date;

  @Field(() => String, { description: 'Dotted verb, e.g. key.create, key.revoke, role.assign, auth.failure, authz.denied' })
  action: string;

  @Field(() => AuditOutcome)
  outcome: AuditOutcome;

  @Field(() => ActorType)
  actorType: ActorType;

  @Field(() => String, { nullable: true })
  targetType: string | null;

  @Field(() => String, { nullable: true })
  targetId: string | null;

  @Field(() => String, { nullable: true })
  ip: string | null;

  @Field(() => String, { nullable: true })
  userAgent: string | null;

  @Field(() => String, { nullable: true })
  requestId: string | null;

  @Field(() => JSONObject, { nullable: true, description: 'What changed (before/after) and why; never secrets or hashes' })
  details: Record<string, unknown> | null;

  @Field(() => String, { description: 'Hash chaining this event to the previous one (tamper evidence)' })
  hash: string;
}

export const AuditEventConnection = connectionTypes('AuditEvent', AuditEvent, false);

@ObjectType('AuditCount')
export class AuditCount {
  @Field(() => String)
  key: string;

  @Field(() => Int)
  count: number;
}

@ObjectType('TimeCount')
export class TimeCount {
  @Field(() => DateTimeISO)
  start: Date;

  @Field(() => Int)
  count: number;
}

@ObjectType('AuditIntegrityReport')
export class AuditIntegrityReport {
  @Field(() => Boolean)
  ok: boolean;

  @Field(() => Int)
  checkedEvents: number;

  @Field(() => ID, { nullable: true, description: 'The first event whose stored hash does not match its recomputed one' })
  firstInvalidEventId: string | null;

  @Field(() => String, { nullable: true })
  headHash: string | null;

  @Field(() => String, { nullable: true, description: 'What is wrong, in words (a changed event, a missing one, a gap no retention accounts for, a count that disagrees with the events); null when ok' })
  problem: string | null;
}
