import { Brackets, type DataSource, type EntityManager } from 'typeorm';
import { RoleEntity, UserEntity, UserRoleEntity } from '../entities';
import { UserKind, UserStatus } from '../entities/enums';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { assertTargetWithinActor, assertWithinActor } from './escalation';
import { BadInputError, ConflictError, ForbiddenError } from './errors';
import { coveredBy } from '../auth/permissions';
import { inTransaction, lockById, lockUserAmong, lockUsersFirst } from './transaction';
import { decodeCursor, pageByCreation, pageSize, type Page } from './pagination';
import { requireRoles, userPermissions } from './role-lookup';
import { isUuid, reasonText, requireEmail, requireIds, requireName, searchText } from './validation';
import { ADVISORY_LOCKS } from '../db/advisory-locks';

const LAST_ADMIN_LOCK = ADVISORY_LOCKS.lastAdmin;

export interface UserFilter {
  kind?: UserKind | null;
  status?: UserStatus | null;
  roleId?: string | null;
  ownerId?: string | null;
  search?: string | null;
}

export interface CreateUserInput {
  name: string;
  email: string;
  roleIds?: string[] | null;
}

export interface CreateServiceAccountInput {
  name: string;
  ownerId: string;
  roleIds?: string[] | null;
}

export interface UpdateUserInput {
  name?: string | null;
  email?: string | null;
  ownerId?: string | null;
}

const NAME_MAX = 200;
const EMAIL_TAKEN = 'A user with this email already exists';

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export class UserService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditService,
  ) {}

  async findById(id: string): Promise<UserEntity | null> {
    if (!isUuid(id)) return null;
    return this.dataSource.manager.findOneBy(UserEntity, { id });
  }

  async list(filter: UserFilter | null | undefined, first: number | null | undefined, after: string | null | undefined): Promise<Page<UserEntity>> {
    // Validate paging arguments before any query runs.
    pageSize(first);
    decodeCursor(after, 'u');
    const query = this.dataSource.manager.createQueryBuilder(UserEntity, 'u');
    if (filter?.kind) query.andWhere('u.kind = :kind', { kind: filter.kind });
    if (filter?.status) query.andWhere('u.status = :status', { status: filter.status });
    if (filter?.ownerId) {
      if (!isUuid(filter.ownerId)) query.andWhere('false');
      else query.andWhere('u.owner_id = :ownerId', { ownerId: filter.ownerId });
    }
    if (filter?.roleId) {
      if (!isUuid(filter.roleId)) query.andWhere('false');
      else {
        query.andWhere('EXISTS (SELECT 1 FROM user_roles ur WHERE ur.user_id = u.id AND ur.role_id = :roleId)', {
          roleId: filter.roleId,
        });
      }
    }
    if (filter?.search) {
      const pattern = `%${escapeLike(searchText(filter.search))}%`;
      query.andWhere(
        new Brackets((q) => q.where('u.name ILIKE :pattern', { pattern }).orWhere('u.email ILIKE :pattern', { pattern })),
      );
    }
    return pageByCreation(query, 'u', first, after);
  }

  async createHuman(actor: Actor, input: CreateUserInput): Promise<UserEntity> {
    const name = requireName('name', input.name, NAME_MAX);
    const email = requireEmail('email', input.email);
    const roleIds = requireIds('roleIds', input.roleIds);
    return this.create(actor, { kind: UserKind.HUMAN, name, email, ownerId: null }, roleIds);
  }

  async createServiceAccount(actor: Actor, input: CreateServiceAccountInput): Promise<UserEntity> {
    const name = requireName('name', input.name, NAME_MAX);
    const roleIds = requireIds('roleIds', input.roleIds);
    return this.create(actor, { kind: UserKind.SERVICE, name, email: null, ownerId: input.ownerId }, roleIds);
  }

  private async create(
    actor: Actor,
    fields: { kind: UserKind; name: string; email: string | null; ownerId: string | null },
    roleIds: string[],
  ): Promise<UserEntity> {
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      await lockUsersFirst(tx, [fields.ownerId, actor.userId]);
      if (fields.ownerId !== null) await this.requireHumanOwner(tx, 'ownerId', fields.ownerId);
      const roles = await requireRoles(tx, 'roleIds', roleIds);
      assertWithinActor(actor, roles.flatMap((r) => r.permissions), 'assign these roles');
      if (fields.email !== null) await this.assertEmailFree(tx, fields.email, null);

      return this.insertUser(tx, actor, { ...fields, roles });
    });
  }

  /** Inserts a user with its roles and its audit event, inside the caller's transaction. */
  async insertUser(
    tx: EntityManager,
    actor: Actor,
    fields: { kind: UserKind; name: string; email: string | null; ownerId: string | null; roles: RoleEntity[] },
  ): Promise<UserEntity> {
    const { roles, ...columns } = fields;
    const user = tx.create(UserEntity, {
      ...columns,
      status: UserStatus.ACTIVE,
      disabledReason: null,
      createdAt: new Date(),
      createdById: actor.userId,
      lastActiveAt: null,
    });
    await tx.insert(UserEntity, user);
    await this.insertRoles(tx, user.id, roles);
    await this.audit.record(tx, actor, {
      action: 'user.create',
      targetType: 'user',
      targetId: user.id,
      details: {
        kind: user.kind,
        after: { name: user.name, email: user.email, ownerId: user.ownerId, roles: roles.map((r) => r.name) },
      },
    });
    return user;
  }

  async update(actor: Actor, id: string, input: UpdateUserInput): Promise<UserEntity> {
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      // A new owner is pointed at (its foreign key): its row too, in id order with this user's.
      const user = await lockUserAmong(tx, id, [input.ownerId]);
      assertTargetWithinActor(actor, await userPermissions(tx, user.id), 'change this user');
      const before: Record<string, unknown> = {};
      const after: Record<string, unknown> = {};
      const change = <K extends 'name' | 'email' | 'ownerId'>(field: K, value: UserEntity[K]) => {
        if (user[field] === value) return;
        before[field] = user[field];
        after[field] = value;
        user[field] = value;
      };

      if (input.name !== undefined && input.name !== null) change('name', requireName('name', input.name, NAME_MAX));
      if (input.email !== undefined && input.email !== null) {
        if (user.kind !== UserKind.HUMAN) throw new BadInputError('email', 'Service accounts have no email');
        const email = requireEmail('email', input.email);
        await this.assertEmailFree(tx, email, user.id);
        change('email', email);
      }
      if (input.ownerId !== undefined && input.ownerId !== null) {
        if (user.kind !== UserKind.SERVICE) throw new BadInputError('ownerId', 'Only a service account has an owner');
        await this.requireHumanOwner(tx, 'ownerId', input.ownerId);
        if (input.ownerId !== user.ownerId) assertMayHandOver(actor, user);
        change('ownerId', input.ownerId);
      }
      if (Object.keys(after).length === 0) return user;
      await tx.update(UserEntity, { id: user.id }, after);
      await this.audit.record(tx, actor, { action: 'user.update', targetType: 'user', targetId: user.id, details: { before, after } });
      return user;
    });
  }

  async disable(actor: Actor, id: string, reason: string): Promise<UserEntity> {
    const why = reasonText(reason);
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      const user = await lockById(tx, UserEntity, 'User', id);
      if (user.id === actor.userId) throw new ConflictError('You cannot disable yourself');
      assertTargetWithinActor(actor, await userPermissions(tx, user.id, true), 'disable this user');
      if (user.status === UserStatus.DISABLED) return user;
      await this.assertNotLastAdmin(tx, user.id, 'disable');
      user.status = UserStatus.DISABLED;
      user.disabledReason = why;
      await tx.update(UserEntity, { id: user.id }, { status: user.status, disabledReason: why });
      await this.audit.record(tx, actor, {
        action: 'user.disable',
        targetType: 'user',
        targetId: user.id,
        details: { reason: why, before: { status: UserStatus.ACTIVE }, after: { status: UserStatus.DISABLED } },
      });
      return user;
    });
  }

  async enable(actor: Actor, id: string): Promise<UserEntity> {
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      const user = await lockById(tx, UserEntity, 'User', id);
      assertTargetWithinActor(actor, await userPermissions(tx, user.id, true), 'enable this user');
      if (user.status === UserStatus.ACTIVE) return user;
      user.status = UserStatus.ACTIVE;
      user.disabledReason = null;
      await tx.update(UserEntity, { id: user.id }, { status: user.status, disabledReason: null });
      await this.audit.record(tx, actor, {
        action: 'user.enable',
        targetType: 'user',
        targetId: user.id,
        details: { before: { status: UserStatus.DISABLED }, after: { status: UserStatus.ACTIVE } },
      });
      return user;
    });
  }

  async assignRole(actor: Actor, userId: string, roleId: string): Promise<UserEntity> {
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      const user = await lockById(tx, UserEntity, 'User', userId);
      const role = await lockById(tx, RoleEntity, 'Role', roleId);
      assertWithinActor(actor, role.permissions, `assign role ${role.name}`);
      assertTargetWithinActor(actor, await userPermissions(tx, user.id), 'change the roles of this user');
      const existing = await tx.findOneBy(UserRoleEntity, { userId: user.id, roleId: role.id });
      if (existing) return user;
      await this.insertRoles(tx, user.id, [role]);
      await this.audit.record(tx, actor, {
        action: 'role.assign',
        targetType: 'user',
        targetId: user.id,
        details: { roleId: role.id, role: role.name, permissions: role.permissions },
      });
      return user;
    });
  }

  async unassignRole(actor: Actor, userId: string, roleId: string): Promise<UserEntity> {
    return inTransaction(this.audit, EMAIL_TAKEN, async (tx) => {
      const user = await lockById(tx, UserEntity, 'User', userId);
      const role = await lockById(tx, RoleEntity, 'Role', roleId);
      assertWithinActor(actor, role.permissions, `unassign role ${role.name}`);
      assertTargetWithinActor(actor, await userPermissions(tx, user.id), 'change the roles of this user');
      const existing = await tx.findOneBy(UserRoleEntity, { userId: user.id, roleId: role.id });
      if (!existing) return user;
      if (role.builtIn && role.name === 'admin') await this.assertNotLastAdmin(tx, user.id, 'remove the admin role from');
      await tx.delete(UserRoleEntity, { userId: user.id, roleId: role.id });
      await this.audit.record(tx, actor, {
        action: 'role.unassign',
        targetType: 'user',
        targetId: user.id,
        details: { roleId: role.id, role: role.name, permissions: role.permissions },
      });
      return user;
    });
  }




  private async requireHumanOwner(tx: EntityManager, field: string, ownerId: string): Promise<UserEntity> {
    const owner = isUuid(ownerId) ? await tx.findOneBy(UserEntity, { id: ownerId }) : null;
    if (!owner) throw new BadInputError(field, `${field} names a user that does not exist`);
    if (owner.kind !== UserKind.HUMAN) throw new BadInputError(field, 'A service account must be owned by a human');
    if (owner.status !== UserStatus.ACTIVE) throw new BadInputError(field, 'The owner is disabled');
    return owner;
  }

  private async assertEmailFree(tx: EntityManager, email: string, exceptId: string | null): Promise<void> {
    const rows = (await tx.query('SELECT id FROM users WHERE lower(email) = $1', [email])) as Array<{ id: string }>;
    if (rows.some((r) => r.id !== exceptId)) throw new ConflictError(EMAIL_TAKEN);
  }

  /** Keeps at least one active human holding the admin role, so nobody locks the organisation out. */
  private async assertNotLastAdmin(tx: EntityManager, userId: string, attempt: string): Promise<void> {
    // Two administrators removing each other at once would each count the other as still active
    // (write skew): the count and the change that follows are serialised across all instances.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LAST_ADMIN_LOCK]);
    const [row] = (await tx.query(
      `SELECT count(*)::int AS others, bool_or(u.id = $1) AS is_admin
         FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id
        WHERE r.built_in AND r.name = 'admin' AND u.status = 'ACTIVE' AND u.kind = 'HUMAN'`,
      [userId],
    )) as Array<{ others: number; is_admin: boolean | null }>;
    if (row?.is_admin && row.others <= 1) throw new ConflictError(`Cannot ${attempt} the last active administrator`);
  }

  private async insertRoles(tx: EntityManager, userId: string, roles: readonly RoleEntity[]): Promise<void> {
    if (roles.length === 0) return;
    const createdAt = new Date();
    await tx.insert(UserRoleEntity, roles.map((r) => ({ userId, roleId: r.id, createdAt })));
  }
}

/**
 * A service account's owner manages its keys (keys:own): moving it hands those over, so only its
 * owner or a holder of keys:write may, not anyone with users:write.
 */
function assertMayHandOver(actor: Actor, account: UserEntity): void {
  if (account.ownerId === actor.userId || coveredBy(actor.permissions, 'keys:write')) return;
  throw new ForbiddenError("Moving a service account hands over its keys: only its owner or a holder of keys:write may", { required: ['keys:write'] });
}
