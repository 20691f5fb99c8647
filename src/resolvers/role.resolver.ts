import { Arg, Authorized, Ctx, ID, Mutation, Query, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { CreateRoleInput, UpdateRoleInput } from '../schema/role.input';
import { Role } from '../schema/role.type';

@Resolver(() => Role)
export class RoleResolver {
  @Authorized('roles:read')
  @Query(() => Role, { nullable: true })
  role(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.loaders.roleById.load(id);
  }

  @Authorized('roles:read')
  @Query(() => [Role])
  roles(@Ctx() ctx: GraphQLContext) {
    return ctx.services.roles.list();
  }

  @Authorized('roles:write')
  @Mutation(() => Role)
  createRole(@Arg('input', () => CreateRoleInput) input: CreateRoleInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.roles.create(ctx.actor, input);
  }

  @Authorized('roles:write')
  @Mutation(() => Role)
  updateRole(@Arg('id', () => ID) id: string, @Arg('input', () => UpdateRoleInput) input: UpdateRoleInput, @Ctx() ctx: GraphQLContext) {
    return ctx.services.roles.update(ctx.actor, id, input);
  }

  @Authorized('roles:write')
  @Mutation(() => Boolean)
  deleteRole(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.roles.delete(ctx.actor, id);
  }
}
