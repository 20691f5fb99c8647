import { Field, ID, InputType } from 'type-graphql';
import { UserKind, UserStatus } from './enums';

@InputType('UserFilter')
export class UserFilter {
  @Field(() => UserKind, { nullable: true })
  kind?: UserKind | null;

  @Field(() => UserStatus, { nullable: true })
  status?: UserStatus | null;

  @Field(() => ID, { nullable: true })
  roleId?: string | null;

  @Field(() => ID, { nullable: true })
  ownerId?: string | null;

  @Field(() => String, { nullable: true, description: 'Case-insensitive substring of name or email' })
  search?: string | null;
}

@InputType('CreateUserInput')
export class CreateUserInput {
  @Field(() => String)
  name: string;

  @Field(() => String)
  email: string;

  @Field(() => [ID], { nullable: true })
  roleIds?: string[] | null;
}

@InputType('CreateServiceAccountInput')
export class CreateServiceAccountInput {
  @Field(() => String)
  name: string;

  @Field(() => ID)
  ownerId: string;

  @Field(() => [ID], { nullable: true })
  roleIds?: string[] | null;
}

@InputType('UpdateUserInput')
export class UpdateUserInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => String, { nullable: true })
  email?: string | null;

  @Field(() => ID, { nullable: true, description: 'Transfer a service account to another human' })
  ownerId?: string | null;
}
