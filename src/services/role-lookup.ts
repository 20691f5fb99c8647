import { In, type EntityManager } from 'typeorm';
import { ApiKeyRoleEntity, RoleEntity, type ApiKeyEntity } from '../entities';
import { BadInputError } from './errors';
import { isUuid } from './validation';

/**
 * Roles named by an input field; an unknown one is bad input naming that field. They are locked
 * FOR SHARE until the transaction ends: a concurrent deleteRole waits for the grant to commit (and
 * then removes it with the role) instead of deleting the role between this check and the insert.
 */
export async function requireRoles(tx: EntityManager, field: string, ids: readonly string[]): Promise<RoleEntity[]> {
  if (ids.length === 0) return [];
  const unknown = () => new BadInputError(field, `${field} names a role that does not exist`);
  if (!ids.every(isUuid)) throw unknown();
  const roles = await tx.find(RoleEntity, { where: { id: In([...ids]) }, lock: { mode: 'pessimistic_read' } });
  if (roles.length !== ids.length) throw unknown();
  return roles;
}

/**
 * Union of the permissions of a user's roles; with `serviceAccounts`, also of the service accounts
 * the user owns (disabling or enabling a human stops or restarts their keys too).
 */
export async function userPermissions(tx: EntityManager, userId: string, serviceAccounts = false): Promise<string[]> {
  const rows = (await tx.query(
    `SELECT DISTINCT p FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id, unnest(r.permissions) p
      WHERE u.id = $1 OR ($2 AND u.owner_id = $1)`,
    [userId, serviceAccounts],
  )) as Array<{ p: string }>;
  return rows.map((r) => r.p);
}

/**
 * Union of the permissions of everyone a change to the role reaches: the users holding it and the
 * owners of the keys carrying it (a revoked key is never used again: it reaches no one). One query,
 * however many hold the role.
 */
export async function holdersPermissions(tx: EntityManager, roleId: string): Promise<string[]> {
  const rows = (await tx.query(
    `WITH reached AS (
       SELECT user_id FROM user_roles WHERE role_id = $1
       UNION
       SELECT k.owner_id FROM api_key_roles kr JOIN api_keys k ON k.id = kr.key_id WHERE kr.role_id = $1 AND k.stored_status <> 'REVOKED'
     )
     SELECT DISTINCT p FROM roles r, unnest(r.permissions) p
      WHERE r.id IN (SELECT ur.role_id FROM user_roles ur JOIN reached USING (user_id))`,
    [roleId],
  )) as Array<{ p: string }>;
  return rows.map((r) => r.p);
}

/** A key's own grants: its granted permissions and its roles', before its owner's permissions bound them. */
export async function keyGrants(tx: EntityManager, key: Pick<ApiKeyEntity, 'id' | 'grantedPermissions'>): Promise<string[]> {
  const roleIds = (await tx.find(ApiKeyRoleEntity, { where: { keyId: key.id } })).map((r) => r.roleId);
  const roles = roleIds.length > 0 ? await tx.find(RoleEntity, { where: { id: In(roleIds) } }) : [];
  return [...key.grantedPermissions, ...roles.flatMap((r) => r.permissions)];
}
