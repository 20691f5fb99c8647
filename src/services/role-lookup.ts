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
 * A user's permissions and those of the service accounts they own: disabling or enabling a human
 * stops or restarts their service accounts' keys too, so that is what such a change reaches.
 */
export async function permissionsWithServiceAccounts(tx: EntityManager, userId: string): Promise<string[]> {
  const rows = (await tx.query(
    `SELECT DISTINCT p FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id, unnest(r.permissions) p
      WHERE u.id = $1 OR u.owner_id = $1`,
    [userId],
  )) as Array<{ p: string }>;
  return rows.map((r) => r.p);
}

/** Union of the permissions of a user's roles. */
export async function userPermissions(tx: EntityManager, userId: string): Promise<string[]> {
  const rows = (await tx.query(
    `SELECT DISTINCT p FROM user_roles ur JOIN roles r ON r.id = ur.role_id, unnest(r.permissions) p WHERE ur.user_id = $1`,
    [userId],
  )) as Array<{ p: string }>;
  return rows.map((r) => r.p);
}
