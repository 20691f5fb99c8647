import { Field, ID, ObjectType } from 'type-graphql';
import { DateTimeISO } from './scalars';

@ObjectType('Role')
export class Role {
  @Field(() => ID)
  id: string;

  @Field(() => String, { description: 'Unique, e.g. admin, auditor, billing-reader' })
  name: string;

  @Field(() => String, { nullable: true })
  description: string | null;

  @Field(() => [String], { description: "Permission strings of the form resource:action; '*' and 'resource:*' are wildcards" })
  permissions: string[];

  @Field(() => Boolean, { description: 'Shipped with the server: admin, auditor, key-manager, verifier, member. Cannot be deleted.' })
  builtIn: boolean;

  @Field(() => DateTimeISO)
  createdAt: Date;
}
