import type { DataSource, EntityManager } from 'typeorm';
import { redactKeys } from '../auth/key-format';
import { RoleEntity } from '../entities';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { assertHoldersWithinActor, assertWithinActor } from './escalation';
import { BadInputError, ConflictError } from './errors';
import { holdersPermissions } from './role-lookup';
import { inTransaction, lockById } from './transaction';
import { isUuid, optionalText, requirePermissions, requireText } from './validation';

export interface CreateRoleInput {
  name: string;
  description?: string | null;
  permissions: string[];
}

export interface UpdateRoleInput {
  name?: string | null;
  description?: string | null;
  permissions?: string[] | null;
}

const ROLE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,99}$/;
const DESCRIPTION_MAX = 1000;
const NAME_TAKEN = 'A role with this name already exists';

function requireRoleName(value: string): string {
  const name = requireText('name', value, 100);
  if (!ROLE_NAME_PATTERN.test(name)) {
    throw new BadInputError('name', 'name must start with a letter or digit and use letters, digits, space, _ . : -');
  }
  // Every roles:read reader sees a role's name, and nothing it may hold can be blanked and stay a name.
  if (redactKeys(name) !== name) throw new BadInputError('name', 'name must not hold an API key');
  return name;
}

export class RoleService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditService,
  ) {}

  async findById(id: string): Promise<RoleEntity | null> {
    if (!isUuid(id)) return null;
    return this.dataSource.manager.findOneBy(RoleEntity, { id });
  }

  async list(): Promise<RoleEntity[]> {
    return this.dataSource.manager.find(RoleEntity, { order: { builtIn: 'DESC', name: 'ASC' } });
  }

  async create(actor: Actor, input: CreateRoleInput): Promise<RoleEntity> {
    const name = requireRoleName(input.name);
    const description = optionalText('description', input.description, DESCRIPTION_MAX);
    const permissions = requirePermissions('permissions', input.permissions);
    assertWithinActor(actor, permissions, 'create this role');
    return inTransaction(this.audit, NAME_TAKEN, async (tx) => {
      await this.assertNameFree(tx, name, null);
      const now = new Date();
      const role = tx.create(RoleEntity, { name, description, permissions, builtIn: false, createdAt: now, updatedAt: now });
      await tx.insert(RoleEntity, role);
      await this.audit.record(tx, actor, {
        action: 'role.create',
        targetType: 'role',
        targetId: role.id,
        details: { after: { name, description, permissions } },
      });
      return role;
    });
  }

  async update(actor: Actor, id: string, input: UpdateRoleInput): Promise<RoleEntity> {
    return inTransaction(this.audit, NAME_TAKEN, async (tx) => {
      const role = await lockById(tx, RoleEntity, 'Role', id);
      const before: Record<string, unknown> = {};
      const after: Record<string, unknown> = {};

      if (input.name !== undefined && input.name !== null) {
        const name = requireRoleName(input.name);
        if (name !== role.name) {
          if (role.builtIn) throw new ConflictError(`The built-in role ${role.name} cannot be renamed`);
          await this.assertNameFree(tx, name, role.id);
          before.name = role.name;
          after.name = role.name = name;
        }
      }
      if (input.description !== undefined) {
        const description = optionalText('description', input.description, DESCRIPTION_MAX);
        if (description !== role.description) {
          before.description = role.description;
          after.description = role.description = description;
        }
      }
      if (input.permissions !== undefined && input.permissions !== null) {
        const permissions = requirePermissions('permissions', input.permissions);
        if (role.builtIn && role.name === 'admin' && !permissions.includes('*')) {
          throw new ConflictError('The built-in admin role must keep *');
        }
        // Both sides: you may neither add nor take away what you do not hold yourself.
        assertWithinActor(actor, [...permissions, ...role.permissions], `change the permissions of role ${role.name}`);
        if (permissions.join(' ') !== role.permissions.join(' ')) {
          await assertReachWithinActor(tx, actor, role, `change the permissions of role ${role.name}`);
          before.permissions = role.permissions;
          after.permissions = role.permissions = permissions;
        }
      }
      // Relabelling a role is changing it: one who could not delete it must not make it look harmless to whoever assigns it.
      if ('name' in after || 'description' in after) assertWithinActor(actor, role.permissions, `change role ${before.name ?? role.name}`);
      if (Object.keys(after).length === 0) return role;
      role.updatedAt = new Date();
      await tx.update(RoleEntity, { id: role.id }, { ...after, updatedAt: role.updatedAt });
      await this.audit.record(tx, actor, { action: 'role.update', targetType: 'role', targetId: role.id, details: { before, after } });
      return role;
    });
  }

  async delete(actor: Actor, id: string): Promise<boolean> {
    return inTransaction(this.audit, NAME_TAKEN, async (tx) => {
      const role = await lockById(tx, RoleEntity, 'Role', id);
      if (role.builtIn) throw new ConflictError(`The built-in role ${role.name} cannot be deleted`);
      assertWithinActor(actor, role.permissions, `delete role ${role.name}`);
      await assertReachWithinActor(tx, actor, role, `delete role ${role.name}`);
      const [usage] = (await tx.query(
        `SELECT (SELECT count(*)::int FROM user_roles WHERE role_id = $1) AS users,
                (SELECT count(*)::int FROM api_key_roles WHERE role_id = $1) AS keys`,
        [role.id],
      )) as Array<{ users: number; keys: number }>;
      await tx.delete(RoleEntity, { id: role.id });
      await this.audit.record(tx, actor, {
        action: 'role.delete',
        targetType: 'role',
        targetId: role.id,
        details: {
          before: { name: role.name, description: role.description, permissions: role.permissions },
          unassignedFrom: usage,
        },
      });
      return true;
    });
  }



  private async assertNameFree(tx: EntityManager, name: string, exceptId: string | null): Promise<void> {
    const rows = (await tx.query('SELECT id FROM roles WHERE lower(name) = lower($1)', [name])) as Array<{ id: string }>;
    if (rows.some((r) => r.id !== exceptId)) throw new ConflictError(`A role named ${name} already exists`);
  }
}

/**
 * Changing a role's permissions or deleting it changes its holders as assignRole and unassignRole
 * would: refused when any of them holds more than the actor. No holder is added meanwhile: every
 * grant of the role locks it (FOR SHARE, or its foreign key's FOR KEY SHARE), and update and delete
 * hold it FOR UPDATE. The holders are read, not locked: users are locked before roles, never after.
 */
async function assertReachWithinActor(tx: EntityManager, actor: Actor, role: RoleEntity, attempt: string): Promise<void> {
  assertHoldersWithinActor(actor, await holdersPermissions(tx, role.id), attempt);
}
