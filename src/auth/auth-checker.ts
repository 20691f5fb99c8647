import { responsePathAsArray } from 'graphql';
import type { AuthCheckerFn } from 'type-graphql';
import { ForbiddenError } from '../services/errors';
import type { GraphQLContext } from './context';
import { coveredBy } from './permissions';

/** Throws FORBIDDEN unless the caller holds at least one of the permissions. */
export function requireAnyPermission(context: GraphQLContext, anyOf: readonly string[], operation: string): void {
  if (anyOf.some((p) => coveredBy(context.principal.permissions, p))) return;
  throw new ForbiddenError(`${operation} requires ${anyOf.join(' or ')}`, { required: anyOf, operation });
}

/** `@Authorized('a', 'b')` means: holding a or b is enough. Denials are audited by the server's error hook. */
export const authChecker: AuthCheckerFn<GraphQLContext> = ({ context, info }, anyOf) => {
  try {
    requireAnyPermission(context, anyOf, `${info.parentType.name}.${info.fieldName}`);
  } catch (error) {
    context.refusals?.push({ originalError: error, path: responsePathAsArray(info.path) });
    throw error;
  }
  return true;
};
