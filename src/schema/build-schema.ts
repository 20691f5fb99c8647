import 'reflect-metadata';
import { GraphQLID, responsePathAsArray, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
import type { GraphQLContext } from '../auth/context';
import { DomainError } from '../services/errors';
import { lowerCaseUuid } from '../services/validation';
import { buildSchema } from 'type-graphql';
import { authChecker } from '../auth/auth-checker';
import { AlertResolver, AlertRuleResolver } from '../resolvers/alert.resolver';
import { ApiKeyResolver } from '../resolvers/api-key.resolver';
import { AuditResolver } from '../resolvers/audit.resolver';
import { RoleResolver } from '../resolvers/role.resolver';
import { SubscriptionResolver } from '../resolvers/subscription.resolver';
import { UsageResolver } from '../resolvers/usage.resolver';
import { UserResolver } from '../resolvers/user.resolver';
import { VerifyResolver } from '../resolvers/verify.resolver';
import { ViewerResolver } from '../resolvers/viewer.resolver';

export const RESOLVERS = [
  ViewerResolver,
  UserResolver,
  RoleResolver,
  ApiKeyResolver,
  VerifyResolver,
  UsageResolver,
  AuditResolver,
  AlertRuleResolver,
  AlertResolver,
  SubscriptionResolver,
] as const;

let uuidsLowered = false;

/**
 * GraphQL's ID reads a UUID in lower case, as PostgreSQL prints it, so an id compares equal to
 * itself however a client writes it (loaders, self checks, before/after in audit events). The
 * contract's type stays `ID`, so its one instance is adjusted rather than replaced.
 */
function lowerCaseUuidIds(): void {
  if (uuidsLowered) return;
  uuidsLowered = true;
  const { parseValue, parseLiteral } = GraphQLID;
  GraphQLID.parseValue = (value) => lowerCaseUuid(parseValue.call(GraphQLID, value));
  GraphQLID.parseLiteral = (node, variables) => lowerCaseUuid(parseLiteral.call(GraphQLID, node, variables));
}

/**
 * Root fields' refusals are kept in the request's context as they happen: when one refused non-null
 * root field nulls the whole answer, graphql-js drops the errors of root fields still running
 * (a refusal after a lookup), and each refusal must be audited all the same. Root fields only:
 * a few per request, unlike the fields of a list.
 */
function keepRootRefusals(schema: GraphQLSchema): GraphQLSchema {
  for (const type of [schema.getQueryType(), schema.getMutationType()]) {
    if (!type) continue;
    for (const field of Object.values(type.getFields())) {
      const resolve = field.resolve as GraphQLFieldResolver<unknown, GraphQLContext> | undefined;
      if (!resolve) continue;
      const root = `${type.name}.${field.name}`;
      const keep = (error: unknown, context: GraphQLContext, path: ReadonlyArray<string | number>, args: Record<string, unknown>) => {
        if (error instanceof DomainError && error.code === 'FORBIDDEN') context.refusals?.push({ originalError: error, path, root: { field: root, args } });
      };
      field.resolve = (source, args, context: GraphQLContext, info) => {
        try {
          const result = resolve(source, args, context, info) as unknown;
          if (!(result instanceof Promise)) return result;
          const watched = result.catch((error: unknown) => {
            keep(error, context, responsePathAsArray(info.path), args);
            throw error;
          });
          // The denial audit waits for these: graphql-js may have answered without them.
          context.rootsInFlight?.push(watched.then(() => undefined, () => undefined));
          return watched;
        } catch (error) {
          keep(error, context, responsePathAsArray(info.path), args);
          throw error;
        }
      };
    }
  }
  return schema;
}

/**
 * Mutation fields run one after another, each answering the state it leaves: a request's loaders
 * are renewed before each runs and again once its change is made, so its answer reads nothing
 * cached by an earlier field or by its own checks before the change.
 */
function renewLoadersAroundMutations(schema: GraphQLSchema): GraphQLSchema {
  for (const field of Object.values(schema.getMutationType()?.getFields() ?? {})) {
    const resolve = field.resolve as GraphQLFieldResolver<unknown, GraphQLContext> | undefined;
    if (!resolve) continue;
    field.resolve = (source, args, context: GraphQLContext, info) => {
      context.renewLoaders?.();
      const result = resolve(source, args, context, info) as unknown;
      if (!(result instanceof Promise)) {
        context.renewLoaders?.();
        return result;
      }
      return result.then((value: unknown) => {
        context.renewLoaders?.();
        return value;
      });
    };
  }
  return schema;
}

/** No global middlewares: they would wrap every field in an async resolver (slow on large lists). */
export async function buildKeyledgerSchema(emitTo?: string): Promise<GraphQLSchema> {
  lowerCaseUuidIds();
  return renewLoadersAroundMutations(keepRootRefusals(await buildSchema({
    resolvers: RESOLVERS,
    authChecker,
    authMode: 'error',
    validate: false,
    // Subscriptions bring their own feeds (`subscribe`); type-graphql only insists a PubSub exists.
    pubSub: {
      publish: () => undefined,
      subscribe: () => {
        throw new Error('topic subscriptions are not used');
      },
    },
    emitSchemaFile: emitTo ? { path: emitTo, sortedSchema: false } : false,
  })));
}
