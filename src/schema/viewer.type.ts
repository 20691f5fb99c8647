import { Field, ObjectType } from 'type-graphql';
import { ApiKey } from './api-key.type';
import { User } from './user.type';

@ObjectType('Viewer')
export class Viewer {
  @Field(() => User)
  user: User;

  @Field(() => ApiKey)
  key: ApiKey;

  @Field(() => [String])
  permissions: string[];
}
