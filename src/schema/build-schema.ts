import 'reflect-metadata';
import type { GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { authChecker } from '../auth/auth-checker';
import { ApiKeyResolver } from '../resolvers/api-key.resolver';
import { AuditResolver } from '../resolvers/audit.resolver';
import { RoleResolver } from '../resolvers/role.resolver';
import { UsageResolver } from '../resolvers/usage.resolver';
import { UserResolver } from '../resolvers/user.resolver';
import { VerifyResolver } from '../resolvers/verify.resolver';
import { ViewerResolver } from '../resolvers/viewer.resolver';

export const RESOLVERS = [ViewerResolver, UserResolver, RoleResolver, ApiKeyResolver, VerifyResolver, UsageResolver, AuditResolver] as const;

/** No global middlewares: they would wrap every field in an async resolver (slow on large lists). */
export function buildKeyledgerSchema(emitTo?: string): Promise<GraphQLSchema> {
  return buildSchema({
    resolvers: RESOLVERS,
    authChecker,
    authMode: 'error',
    validate: false,
    emitSchemaFile: emitTo ? { path: emitTo, sortedSchema: false } : false,
  });
}
