import { Field, ID, Int, ObjectType } from 'type-graphql';
import { connectionTypes } from './connection.type';
import { DateTimeISO, JSONObject } from './scalars';

@ObjectType('RateLimit')
export class RateLimit {
  @Field(() => Int)
  limit: number;

  @Field(() => Int)
  windowSeconds: number;
}

@ObjectType('Refill')
export class Refill {
  @Field(() => Int)
  amount: number;

  @Field(() => Int)
  intervalSeconds: number;

  @Field(() => DateTimeISO, { nullable: true })
  lastRefillAt: Date | null;
}

/** Derived and relation fields (status, owner, roles, permissions ...) live in ApiKeyResolver. */
@ObjectType('ApiKey')
export class ApiKey {
  @Field(() => ID)
  id: string;

  @Field(() => String)
  name: string;

  @Field(() => String, { description: 'Non-secret leading characters for display, e.g. kl_3Fz9 (prefix plus the first 4 characters)' })
  start: string;

  @Field(() => [String], { description: 'Permissions granted directly to the key' })
  grantedPermissions: string[];

  @Field(() => DateTimeISO, { nullable: true })
  expiresAt: Date | null;

  @Field(() => DateTimeISO, { nullable: true })
  revokedAt: Date | null;

  @Field(() => String, { nullable: true })
  revokeReason: string | null;

  @Field(() => [String], { description: 'IPv4/IPv6 CIDRs the key may be used from; empty means anywhere' })
  allowedCidrs: string[];

  /** Exposed by ApiKeyResolver.remaining: a rotated key draws on its successor's quota. */
  remaining: number | null;

  @Field(() => JSONObject, { nullable: true })
  metadata: Record<string, unknown> | null;

  @Field(() => DateTimeISO, { nullable: true })
  lastUsedAt: Date | null;

  @Field(() => String, { nullable: true })
  lastUsedIp: string | null;

  @Field(() => DateTimeISO)
  createdAt: Date;

  @Field(() => DateTimeISO)
  updatedAt: Date;
}

@ObjectType('CreatedApiKey')
export class CreatedApiKey {
  @Field(() => ApiKey)
  apiKey: ApiKey;

  @Field(() => String, { description: 'The full secret. Returned once here; never stored in clear, logged or shown again.' })
  secret: string;
}

export const ApiKeyConnection = connectionTypes('ApiKey', ApiKey, true);
