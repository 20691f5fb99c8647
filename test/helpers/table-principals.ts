import { randomBytes } from 'node:crypto';
import { postGraphQL, type GraphQLResponse, type TestServer } from './server';

/** The five built-in roles, plus "viewer": a key that authenticates and holds no permission at all. */
export type PrincipalName = 'admin' | 'auditor' | 'key-manager' | 'verifier' | 'member' | 'viewer';
export const BUILT_IN_ROLES = ['admin', 'auditor', 'key-manager', 'verifier', 'member'] as const;
export const PRINCIPAL_NAMES: readonly PrincipalName[] = [...BUILT_IN_ROLES, 'viewer'];

export interface Principal {
  name: PrincipalName;
  userId: string;
  key: string;
}

type Variables = Record<string, unknown>;

/** A raw string query; fails with the whole error list when the response has any error. */
export async function gqlOk<T>(t: TestServer, key: string, query: string, variables: Variables = {}): Promise<T> {
  const result: GraphQLResponse<T> = await postGraphQL<T>(t.url, key, query, variables);
  if (result.errors?.length || !result.data) {
    throw new Error(`GraphQL errors for ${query.replace(/\s+/g, ' ').slice(0, 80)}: ${JSON.stringify(result.errors)}`);
  }
  return result.data;
}

/** Unique per call, so creating mutations never collide on a name or email. */
export function unique(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

export async function builtInRoleIds(t: TestServer): Promise<Map<string, string>> {
  const data = await gqlOk<{ roles: Array<{ id: string; name: string; builtIn: boolean }> }>(
    t,
    t.adminKey,
    'query { roles { id name builtIn } }',
  );
  return new Map(data.roles.filter((r) => r.builtIn).map((r) => [r.name, r.id]));
}

export async function createHuman(t: TestServer, name: string, roleIds: string[]): Promise<string> {
  const data = await gqlOk<{ createUser: { id: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateUserInput!) { createUser(input: $input) { id } }',
    { input: { name, email: `${unique(name.toLowerCase().replace(/[^a-z0-9]+/g, '-'))}@example.com`, roleIds } },
  );
  return data.createUser.id;
}

/** A key with '*': effective permissions are then exactly what the owner's roles hold. */
export async function createKeyFor(t: TestServer, ownerId: string): Promise<string> {
  const data = await gqlOk<{ createApiKey: { secret: string } }>(
    t,
    t.adminKey,
    'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }',
    { input: { ownerId, name: 'k', permissions: ['*'] } },
  );
  return data.createApiKey.secret;
}

/** One user and one key per principal, created by the bootstrap admin. */
export async function createPrincipals(t: TestServer): Promise<Map<PrincipalName, Principal>> {
  const roleIds = await builtInRoleIds(t);
  const principals = new Map<PrincipalName, Principal>();
  for (const name of PRINCIPAL_NAMES) {
    const roleId = roleIds.get(name);
    if (name !== 'viewer' && !roleId) throw new Error(`built-in role ${name} is missing`);
    const roles = roleId ? [roleId] : [];
    const userId = await createHuman(t, `table ${name}`, roles);
    principals.set(name, { name, userId, key: await createKeyFor(t, userId) });
  }
  return principals;
}
