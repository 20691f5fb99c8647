import { Field, ID, ObjectType } from 'type-graphql';
import { UserKind, UserStatus } from './enums';
import { DateTimeISO } from './scalars';
import { connectionTypes } from './connection.type';

/** Relations (owner, roles, keys ...) are field resolvers in UserResolver, batched per request. */
@ObjectType('User')
export class User {
  @Field(() => ID)
  id: string;

  @Field(() => UserKind)
  kind: UserKind;

  @Field(() => String)
  name: string;

  @Field(() => String, { nullable: true, description: 'Unique among humans; null for service accounts' })
  email: string | null;

  @Field(() => UserStatus)
  status: UserStatus;

  @Field(() => DateTimeISO)
  createdAt: Date;

  @Field(() => DateTimeISO, { nullable: true })
  lastActiveAt: Date | null;
}

export const UserConnection = connectionTypes('User', User, true);
