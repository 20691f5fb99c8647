import { Field, Int, ObjectType } from 'type-graphql';
import { ApiKey } from './api-key.type';
import { DateTimeISO } from './scalars';
import { User } from './user.type';

@ObjectType('UsagePoint')
export class UsagePoint {
  @Field(() => DateTimeISO)
  start: Date;

  @Field(() => Int)
  valid: number;

  @Field(() => Int)
  invalid: number;
}

@ObjectType('UsageReportRow')
export class UsageReportRow {
  @Field(() => ApiKey)
  key: ApiKey;

  @Field(() => User)
  owner: User;

  @Field(() => Int)
  valid: number;

  @Field(() => Int)
  invalid: number;
}
