import type { DataSource, EntityManager } from 'typeorm';
import { generateKey, hashKey, isValidPrefix, parseKey } from '../auth/key-format';
import { coveredBy } from '../auth/permissions';
import { ApiKeyEntity, ApiKeyRoleEntity, UserEntity } from '../entities';
import { StoredKeyStatus, UserKind } from '../entities/enums';
import type { Actor } from './actor';
import type { AuditService } from './audit.service';
import { assertWithinActor } from './escalation';
import { BadInputError, ForbiddenError } from './errors';
import { requireRoles } from './role-lookup';
import { inTransaction } from './transaction';
import {
  isUuid,
  requireCidrs,
  requireFuture,
  requireIds,
  requireMetadata,
  requirePermissions,
  requirePositiveInt,
  requireText,
} from './validation';

export interface RateLimitSettings {
  limit: number;
  windowSeconds: number;
}

export interface RefillSettings {
  amount: number;
  intervalSeconds: number;
}

export interface CreateApiKeyInput {
  ownerId?: string | null;
  name: string;
  prefix?: string | null;
  roleIds?: string[] | null;
  permissions?: string[] | null;
  expiresAt?: Date | null;
  allowedCidrs?: string[] | null;
  rateLimit?: RateLimitSettings | null;
  remaining?: number | null;
  refill?: RefillSettings | null;
  metadata?: Record<string, unknown> | null;
}

export interface CreatedKey {
  key: ApiKeyEntity;
  /** Returned once to the caller; never stored, logged or audited. */
  secret: string;
}

const NAME_MAX = 200;
const DAY_SECONDS = 86_400;

export class KeyService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditService,
    private readonly pepper: string,
    private readonly defaultPrefix: string,
  ) {}

  async create(actor: Actor, input: CreateApiKeyInput): Promise<CreatedKey> {
    return inTransaction(this.dataSource, 'This key already exists', (tx) => this.insertKey(tx, actor, input));
  }

  /** Validates, inserts the key with its roles and writes its audit event, inside the caller's transaction. */
  async insertKey(tx: EntityManager, actor: Actor, input: CreateApiKeyInput, presetSecret?: string): Promise<CreatedKey> {
    const name = requireText('name', input.name, NAME_MAX);
    const prefix = input.prefix ?? this.defaultPrefix;
    if (!isValidPrefix(prefix)) throw new BadInputError('prefix', 'prefix must be 2-12 lowercase letters or digits');
    const roleIds = requireIds('roleIds', input.roleIds);
    const grantedPermissions = requirePermissions('permissions', input.permissions ?? []);
    const expiresAt = requireFuture('expiresAt', input.expiresAt);
    const allowedCidrs = requireCidrs('allowedCidrs', input.allowedCidrs);
    const rateLimit = input.rateLimit
      ? {
          limit: requirePositiveInt('rateLimit.limit', input.rateLimit.limit),
          windowSeconds: requirePositiveInt('rateLimit.windowSeconds', input.rateLimit.windowSeconds, 30 * DAY_SECONDS),
        }
      : null;
    const remaining = input.remaining ?? null;
    if (remaining !== null && (!Number.isInteger(remaining) || remaining < 0)) {
      throw new BadInputError('remaining', 'remaining must be a whole number of at least 0');
    }
    const refill = input.refill
      ? {
          amount: requirePositiveInt('refill.amount', input.refill.amount),
          intervalSeconds: requirePositiveInt('refill.intervalSeconds', input.refill.intervalSeconds, 365 * DAY_SECONDS),
        }
      : null;
    if (refill && remaining === null) throw new BadInputError('refill', 'refill needs remaining to be set');
    const metadata = requireMetadata('metadata', input.metadata);
    const secret = presetSecret ?? generateKey(prefix);
    const parsed = parseKey(secret);
    if (!parsed) throw new BadInputError('key', 'The key is not well-formed');

    const owner = await this.requireOwner(tx, actor, input.ownerId ?? actor.userId);
    const roles = await requireRoles(tx, 'roleIds', roleIds);
    assertWithinActor(actor, [...grantedPermissions, ...roles.flatMap((r) => r.permissions)], 'issue this key');

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
      rotatedFromId: null,
      allowedCidrs,
      rateLimitLimit: rateLimit?.limit ?? null,
      rateLimitWindowSeconds: rateLimit?.windowSeconds ?? null,
      remaining,
      refillAmount: refill?.amount ?? null,
      refillIntervalSeconds: refill?.intervalSeconds ?? null,
      lastRefillAt: refill ? now : null,
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
      },
    });
    return { key, secret };
  }

  /**
   * keys:write manages anyone's keys; keys:own only one's own and one's service accounts' keys.
   */
  private async requireOwner(tx: EntityManager, actor: Actor, ownerId: string | null): Promise<UserEntity> {
    const owner = ownerId !== null && isUuid(ownerId) ? await tx.findOneBy(UserEntity, { id: ownerId }) : null;
    if (!owner) throw new BadInputError('ownerId', 'ownerId names a user that does not exist');
    if (coveredBy(actor.permissions, 'keys:write')) return owner;
    const ownsIt = owner.id === actor.userId || (owner.kind === UserKind.SERVICE && owner.ownerId === actor.userId);
    if (!ownsIt || !coveredBy(actor.permissions, 'keys:own')) {
      throw new ForbiddenError('keys:own covers only your own keys and your service accounts\' keys', {
        required: ['keys:write'],
      });
    }
    return owner;
  }
}
