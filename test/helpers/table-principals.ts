import { createKeyFor as createKey, createUser, roleIds as allRoleIds, unique } from './fixtures';
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

export async function builtInRoleIds(t: TestServer): Promise<Map<string, string>> {
  return allRoleIds(t, { builtInOnly: true });
}

export async function createHuman(t: TestServer, name: string, roleIds: string[]): Promise<string> {
  return createUser(t, { name, email: `${unique(name.toLowerCase().replace(/[^a-z0-9]+/g, '-'))}@example.com`, roleIds });
}

/** A key with '*': effective permissions are then exactly what the owner's roles hold. */
export async function createKeyFor(t: TestServer, ownerId: string): Promise<string> {
  return (await createKey(t, ownerId)).secret;
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
