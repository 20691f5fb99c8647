import { In, type EntityManager } from 'typeorm';
import { RoleEntity } from '../entities';
import { BadInputError } from './errors';
import { isUuid } from './validation';

/** Roles named by an input field; an unknown one is bad input naming that field. */
export async function requireRoles(tx: EntityManager, field: string, ids: readonly string[]): Promise<RoleEntity[]> {
  if (ids.length === 0) return [];
  const unknown = () => new BadInputError(field, `${field} names a role that does not exist`);
  if (!ids.every(isUuid)) throw unknown();
  const roles = await tx.find(RoleEntity, { where: { id: In([...ids]) } });
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
