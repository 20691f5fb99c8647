import 'reflect-metadata';
import type { GraphQLSchema } from 'graphql';
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

/** No global middlewares: they would wrap every field in an async resolver (slow on large lists). */
export function buildKeyledgerSchema(emitTo?: string): Promise<GraphQLSchema> {
  return buildSchema({
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
  });
}
