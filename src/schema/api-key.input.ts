import { Field, ID, InputType, Int } from 'type-graphql';
import { KeyStatus } from './enums';
import { DateTimeISO, JSONObject } from './scalars';

@InputType('RateLimitInput')
export class RateLimitInput {
  @Field(() => Int)
  limit: number;

  @Field(() => Int)
  windowSeconds: number;
}

@InputType('RefillInput')
export class RefillInput {
  @Field(() => Int)
  amount: number;

  @Field(() => Int)
  intervalSeconds: number;
}

@InputType('UpdateApiKeyInput')
export class UpdateApiKeyInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => [ID], { nullable: true })
  roleIds?: string[] | null;

  @Field(() => [String], { nullable: true, description: "Direct grants; '*' means everything the owner holds" })
  permissions?: string[] | null;

  @Field(() => DateTimeISO, { nullable: true })
  expiresAt?: Date | null;

  @Field(() => [String], { nullable: true })
  allowedCidrs?: string[] | null;

  @Field(() => RateLimitInput, { nullable: true })
  rateLimit?: RateLimitInput | null;

  @Field(() => Int, { nullable: true })
  remaining?: number | null;

  @Field(() => RefillInput, { nullable: true })
  refill?: RefillInput | null;

  @Field(() => JSONObject, { nullable: true })
  metadata?: Record<string, unknown> | null;
}

/** The settings of UpdateApiKeyInput, plus what only creation sets; the name is required here. */
@InputType('CreateApiKeyInput')
export class CreateApiKeyInput extends UpdateApiKeyInput {
  @Field(() => ID, { nullable: true, description: 'Defaults to the caller' })
  ownerId?: string | null;

  @Field(() => String)
  declare name: string;

  @Field(() => String, { nullable: true, description: "Lowercase letters and digits, 2-12 characters; defaults to the server's prefix" })
  prefix?: string | null;
}

@InputType('ApiKeyFilter')
export class ApiKeyFilter {
  @Field(() => ID, { nullable: true })
  ownerId?: string | null;

  @Field(() => KeyStatus, { nullable: true })
  status?: KeyStatus | null;

  @Field(() => DateTimeISO, { nullable: true })
  expiresBefore?: Date | null;

  @Field(() => ID, { nullable: true })
  createdById?: string | null;

  @Field(() => String, { nullable: true, description: 'Case-insensitive substring of name, or a key start such as kl_3Fz9' })
  search?: string | null;
}
