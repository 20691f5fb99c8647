import { Ctx, Query, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { SYSTEM_PERMISSIONS } from '../auth/permissions';
import { Viewer } from '../schema/viewer.type';

@Resolver()
export class ViewerResolver {
  @Query(() => Viewer, { description: 'The caller: its user, the key it authenticated with, and its effective permissions' })
  async viewer(@Ctx() ctx: GraphQLContext): Promise<Viewer> {
    const [user, key] = await Promise.all([
      ctx.loaders.userById.load(ctx.principal.userId),
      ctx.loaders.keyById.load(ctx.principal.keyId),
    ]);
    return { user: user!, key: key!, permissions: ctx.principal.permissions } as Viewer;
  }

  /** Any authenticated caller may read this: it names permissions, it grants none. */
  @Query(() => [String], { description: 'Every permission string the server itself checks' })
  systemPermissions(): string[] {
    return [...SYSTEM_PERMISSIONS];
  }
}
