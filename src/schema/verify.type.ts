import { Field, ID, InputType, Int, ObjectType } from 'type-graphql';
import { VerifyCode } from './enums';
import { DateTimeISO, JSONObject } from './scalars';

@ObjectType('RateLimitState')
export class RateLimitState {
  @Field(() => Int)
  limit: number;

  @Field(() => Int)
  remaining: number;

  @Field(() => DateTimeISO)
  resetAt: Date;
}

@ObjectType('VerifyResult')
export class VerifyResult {
  @Field(() => Boolean)
  valid: boolean;

  @Field(() => VerifyCode)
  code: VerifyCode;

  @Field(() => ID, { nullable: true })
  keyId: string | null;

  @Field(() => String, { nullable: true })
  name: string | null;

  @Field(() => ID, { nullable: true })
  ownerId: string | null;

  @Field(() => [String], { description: 'Effective permissions of the key (empty unless the key was found and is usable)' })
  permissions: string[];

  @Field(() => [String])
  roles: string[];

  @Field(() => DateTimeISO, { nullable: true })
  expiresAt: Date | null;

  @Field(() => Int, { nullable: true })
  remaining: number | null;

  @Field(() => RateLimitState, { nullable: true })
  rateLimit: RateLimitState | null;

  @Field(() => JSONObject, { nullable: true })
  metadata: Record<string, unknown> | null;
}

@InputType('VerifyKeyInput')
export class VerifyKeyInput {
  @Field(() => String)
  key: string;

  @Field(() => String, { nullable: true, description: 'The address the key was presented from, checked against allowedCidrs and recorded' })
  ip?: string | null;

  @Field(() => [String], { nullable: true, description: "All of these must be covered by the key's effective permissions" })
  permissions?: string[] | null;

  @Field(() => String, { nullable: true, description: 'What the key was used for at the calling service, recorded with the usage' })
  resource?: string | null;
}
