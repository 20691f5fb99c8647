import { Field, InputType } from 'type-graphql';

@InputType('CreateRoleInput')
export class CreateRoleInput {
  @Field(() => String)
  name: string;

  @Field(() => String, { nullable: true })
  description?: string | null;

  @Field(() => [String])
  permissions: string[];
}

@InputType('UpdateRoleInput')
export class UpdateRoleInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => String, { nullable: true })
  description?: string | null;

  @Field(() => [String], { nullable: true })
  permissions?: string[] | null;
}
