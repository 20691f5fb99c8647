import { Column, Entity, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { StoredKeyStatus } from './enums';

/** The only place the key hash lives. The secret itself is never stored. */
@Entity('api_keys')
export class ApiKeyEntity {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  /** HMAC-SHA256(KEY_PEPPER, secret) */
  @Column({ type: 'bytea', select: false })
  hash: Buffer;

  @Column({ type: 'text' })
  prefix: string;

  @Column({ type: 'text' })
  start: string;

  @Column({ type: 'text' })
  name: string;

  @Column({ name: 'owner_id', type: 'uuid' })
  ownerId: string;

  @Column({ name: 'created_by_id', type: 'uuid', nullable: true })
  createdById: string | null;

  @Column({ name: 'stored_status', type: 'text' })
  storedStatus: StoredKeyStatus;

  @Column({ name: 'granted_permissions', type: 'text', array: true })
  grantedPermissions: string[];

  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true })
  expiresAt: Date | null;

  /** Who disabled the key, while it is disabled: only they, or a holder of keys:write, may enable it again */
  @Column({ name: 'disabled_by_id', type: 'uuid', nullable: true })
  disabledById: string | null;

  @Column({ name: 'revoked_at', type: 'timestamptz', nullable: true })
  revokedAt: Date | null;

  @Column({ name: 'revoked_by_id', type: 'uuid', nullable: true })
  revokedById: string | null;

  @Column({ name: 'revoke_reason', type: 'text', nullable: true })
  revokeReason: string | null;

  @Column({ name: 'rotated_from_id', type: 'uuid', nullable: true })
  rotatedFromId: string | null;

  @Column({ name: 'allowed_cidrs', type: 'text', array: true })
  allowedCidrs: string[];

  @Column({ name: 'rate_limit', type: 'integer', nullable: true })
  rateLimitLimit: number | null;

  @Column({ name: 'rate_limit_window_seconds', type: 'integer', nullable: true })
  rateLimitWindowSeconds: number | null;

  /** The rate-limit window the key counts in: new when its rate-limit setting changes, inherited on rotation */
  @Column({ name: 'rate_limit_window_id', type: 'uuid' })
  rateLimitWindowId: string;

  @Column({ type: 'integer', nullable: true })
  remaining: number | null;

  @Column({ name: 'refill_amount', type: 'integer', nullable: true })
  refillAmount: number | null;

  @Column({ name: 'refill_interval_seconds', type: 'integer', nullable: true })
  refillIntervalSeconds: number | null;

  @Column({ name: 'last_refill_at', type: 'timestamptz', nullable: true })
  lastRefillAt: Date | null;

  @Column({ type: 'jsonb', nullable: true })
  metadata: Record<string, unknown> | null;

  @Column({ name: 'last_used_at', type: 'timestamptz', nullable: true })
  lastUsedAt: Date | null;

  @Column({ name: 'last_used_ip', type: 'text', nullable: true })
  lastUsedIp: string | null;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt: Date;

  @Column({ name: 'updated_at', type: 'timestamptz' })
  updatedAt: Date;
}

@Entity('api_key_roles')
export class ApiKeyRoleEntity {
  @PrimaryColumn({ name: 'key_id', type: 'uuid' })
  keyId: string;

  @PrimaryColumn({ name: 'role_id', type: 'uuid' })
  roleId: string;
}
