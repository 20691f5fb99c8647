import { randomUUID } from 'node:crypto';
import type { EntityManager } from 'typeorm';
import { generateKey, hashKey, isValidPrefix, parseKey } from '../auth/key-format';
import { ApiKeyEntity, ApiKeyRoleEntity, UserEntity } from '../entities';
import { StoredKeyStatus } from '../entities/enums';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { assertWithinActor } from './escalation';
import { BadInputError } from './errors';
import { assertCanManageKeysOf } from './key-access';
import { parseKeySettings, type KeySettingsInput } from './key-settings';
import { keyGrants, requireRoles } from './role-lookup';
import { coversAll } from '../auth/permissions';
import { inTransaction, lockKeyOwnerFirst } from './transaction';
import { isUuid, requireName } from './validation';

export interface CreateApiKeyInput extends KeySettingsInput {
  ownerId?: string | null;
  name: string;
  prefix?: string | null;
}

export interface CreatedKey {
  key: ApiKeyEntity;
  /** Returned once to the caller; never stored, logged or audited. */
  secret: string;
}

const NAME_MAX = 200;

export class KeyService {
  constructor(
    private readonly audit: AuditService,
    private readonly pepper: string,
    private readonly defaultPrefix: string,
  ) {}

  async create(actor: Actor, input: CreateApiKeyInput): Promise<CreatedKey> {
    return inTransaction(this.audit, 'This key already exists', (tx) => this.insertKey(tx, actor, input));
  }

  /** Validates, inserts the key with its roles and writes its audit event, inside the caller's transaction. */
  async insertKey(
    tx: EntityManager,
    actor: Actor,
    input: CreateApiKeyInput,
    options: { presetSecret?: string; rotatedFromId?: string; lastRefillAt?: Date | null; rateLimitWindowId?: string } = {},
  ): Promise<CreatedKey> {
    const settings = parseKeySettings(input);
    const name = requireName('name', input.name, NAME_MAX);
    const prefix = input.prefix ?? this.defaultPrefix;
    if (!isValidPrefix(prefix)) throw new BadInputError('prefix', 'prefix must be 2-12 lowercase letters or digits');
    const roleIds = settings.roleIds ?? [];
    const grantedPermissions = settings.grantedPermissions ?? [];
    const expiresAt = settings.expiresAt ?? null;
    const allowedCidrs = settings.allowedCidrs ?? [];
    const rateLimit = settings.rateLimit ?? null;
    const remaining = settings.remaining ?? null;
    const refill = settings.refill ?? null;
    if (refill && remaining === null) throw new BadInputError('refill', 'refill needs remaining to be set');
    const metadata = settings.metadata ?? null;
    const secret = options.presetSecret ?? generateKey(prefix);
    const parsed = parseKey(secret);
    if (!parsed) throw new BadInputError('key', 'The key is not well-formed');

    const owner = await this.requireOwner(tx, actor, input.ownerId ?? actor.userId);
    const roles = await requireRoles(tx, 'roleIds', roleIds);
    // Grants are issued as given, `*` included, so they must be within the actor's reach. A
    // successor's grants may reach past its owner only for the owner acting with a key granted as
    // much (rotating that key itself, say): any key of the owner's acts as the owner, and a key
    // another made for them must not fetch a successor wider than itself.
    const grants = [...grantedPermissions, ...roles.flatMap((r) => r.permissions)];
    const ownSuccessor = options.rotatedFromId !== undefined && owner.id === actor.userId && (await actingKeyGrantsCover(tx, actor, grants));
    if (!ownSuccessor) assertWithinActor(actor, grants, 'issue this key');

    const now = new Date();
    const key = tx.create(ApiKeyEntity, {
      hash: hashKey(this.pepper, secret),
      prefix: parsed.prefix,
      start: parsed.start,
      name,
      ownerId: owner.id,
      createdById: actor.userId,
      storedStatus: StoredKeyStatus.ACTIVE,
      grantedPermissions,
      expiresAt,
      revokedAt: null,
      revokedById: null,
      revokeReason: null,
      rotatedFromId: options.rotatedFromId ?? null,
      allowedCidrs,
      rateLimitLimit: rateLimit?.limit ?? null,
      rateLimitWindowSeconds: rateLimit?.windowSeconds ?? null,
      // A successor counts in its predecessor's window: a rotation must not restart the rate limit.
      rateLimitWindowId: options.rateLimitWindowId ?? randomUUID(),
      remaining,
      refillAmount: refill?.amount ?? null,
      refillIntervalSeconds: refill?.intervalSeconds ?? null,
      lastRefillAt: refill ? (options.lastRefillAt ?? now) : null,
      metadata,
      lastUsedAt: null,
      lastUsedIp: null,
      createdAt: now,
      updatedAt: now,
    });
    await tx.insert(ApiKeyEntity, key as never);
    if (roles.length > 0) await tx.insert(ApiKeyRoleEntity, roles.map((r) => ({ keyId: key.id, roleId: r.id })));
    await this.audit.record(tx, actor, {
      action: 'key.create',
      targetType: 'api_key',
      targetId: key.id,
      details: {
        after: {
          name,
          start: key.start,
          ownerId: owner.id,
          roles: roles.map((r) => r.name),
          permissions: grantedPermissions,
          expiresAt: expiresAt?.toISOString() ?? null,
          allowedCidrs,
          rateLimit,
          remaining,
          refill,
        },
        ...(options.rotatedFromId ? { rotatedFromId: options.rotatedFromId } : {}),
      },
    });
    return { key, secret };
  }

  /**
   * The owner's and the creator's rows are locked (as the key's foreign keys would lock them) before
   * any role is: users first, as assignRole takes them, so a grant racing an assignment and a
   * deleteRole cannot deadlock.
   */
  private async requireOwner(tx: EntityManager, actor: Actor, ownerId: string | null): Promise<UserEntity> {
    await lockKeyOwnerFirst(tx, ownerId, actor.userId);
    const owner = ownerId !== null && isUuid(ownerId) ? await tx.findOneBy(UserEntity, { id: ownerId }) : null;
    if (!owner) throw new BadInputError('ownerId', 'ownerId names a user that does not exist');
    assertCanManageKeysOf(actor, owner);
    return owner;
  }
}

/** Whether the acting key's own grants (its roles' included, before its owner bounds them) cover `grants`. */
async function actingKeyGrantsCover(tx: EntityManager, actor: Actor, grants: readonly string[]): Promise<boolean> {
  if (!actor.keyId) return false;
  const key = await tx.findOneBy(ApiKeyEntity, { id: actor.keyId });
  if (!key) return false;
  const own = await keyGrants(tx, key);
  return coversAll(own, grants);
}
