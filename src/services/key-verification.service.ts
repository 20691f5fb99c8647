import { BlockList, isIP } from 'node:net';
import type { DataSource } from 'typeorm';
import { hashKey, parseKey } from '../auth/key-format';
import { coversAll, intersect, normalize } from '../auth/permissions';
import { StoredKeyStatus, UserStatus, VerifyCode } from '../entities/enums';

/** Everything a verification needs about one key, read in a single round trip. */
export interface KeyRecord {
  id: string;
  name: string;
  ownerId: string;
  ownerStatus: UserStatus;
  /** Status of the responsible human when the owner is a service account */
  ownerOwnerStatus: UserStatus | null;
  storedStatus: StoredKeyStatus;
  expiresAt: Date | null;
  allowedCidrs: string[];
  metadata: Record<string, unknown> | null;
  remaining: number | null;
  /** The key's own grants plus its roles' permissions, before bounding by the owner */
  keyPermissions: string[];
  ownerPermissions: string[];
  roleNames: string[];
}

export interface VerifyOutcome {
  code: VerifyCode;
  record: KeyRecord | null;
  /** Effective permissions; empty unless the key is usable */
  permissions: string[];
}

export interface VerifyRequest {
  ip?: string | null;
  permissions?: readonly string[];
}

const KEY_QUERY = `
  SELECT k.id, k.name, k.owner_id, u.status AS owner_status, o.status AS owner_owner_status,
         k.stored_status, k.expires_at, k.allowed_cidrs, k.metadata, k.remaining, k.granted_permissions,
         coalesce((SELECT array_agg(DISTINCT p) FROM api_key_roles kr JOIN roles r ON r.id = kr.role_id,
                   unnest(r.permissions) p WHERE kr.key_id = k.id), '{}') AS key_role_permissions,
         coalesce((SELECT array_agg(r.name ORDER BY r.name) FROM api_key_roles kr JOIN roles r ON r.id = kr.role_id
                   WHERE kr.key_id = k.id), '{}') AS role_names,
         coalesce((SELECT array_agg(DISTINCT p) FROM user_roles ur JOIN roles r ON r.id = ur.role_id,
                   unnest(r.permissions) p WHERE ur.user_id = k.owner_id), '{}') AS owner_permissions
  FROM api_keys k
  JOIN users u ON u.id = k.owner_id
  LEFT JOIN users o ON o.id = u.owner_id
  WHERE k.hash = $1`;

interface KeyRow {
  id: string;
  name: string;
  owner_id: string;
  owner_status: UserStatus;
  owner_owner_status: UserStatus | null;
  stored_status: StoredKeyStatus;
  expires_at: Date | null;
  allowed_cidrs: string[];
  metadata: Record<string, unknown> | null;
  remaining: number | null;
  granted_permissions: string[];
  key_role_permissions: string[];
  role_names: string[];
  owner_permissions: string[];
}

function toRecord(row: KeyRow): KeyRecord {
  return {
    id: row.id,
    name: row.name,
    ownerId: row.owner_id,
    ownerStatus: row.owner_status,
    ownerOwnerStatus: row.owner_owner_status,
    storedStatus: row.stored_status,
    expiresAt: row.expires_at,
    allowedCidrs: row.allowed_cidrs,
    metadata: row.metadata,
    remaining: row.remaining,
    keyPermissions: normalize([...row.granted_permissions, ...row.key_role_permissions]),
    ownerPermissions: normalize(row.owner_permissions),
    roleNames: row.role_names,
  };
}

export function effectivePermissions(record: Pick<KeyRecord, 'keyPermissions' | 'ownerPermissions'>): string[] {
  return intersect(record.keyPermissions, record.ownerPermissions);
}

export function ipAllowed(allowedCidrs: readonly string[], ip: string | null | undefined): boolean {
  if (allowedCidrs.length === 0) return true;
  if (!ip) return false;
  const family = isIP(ip);
  if (family === 0) return false;
  const list = new BlockList();
  for (const cidr of allowedCidrs) {
    const [network, bits] = cidr.split('/') as [string, string | undefined];
    const networkFamily = isIP(network) === 6 ? 'ipv6' : 'ipv4';
    list.addSubnet(network, Number(bits ?? (networkFamily === 'ipv6' ? 128 : 32)), networkFamily);
  }
  return list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

/** Checks in the contract's VerifyCode order and stops at the first failure. */
export function evaluate(record: KeyRecord, request: VerifyRequest, now: Date): VerifyCode {
  if (record.storedStatus === StoredKeyStatus.REVOKED) return VerifyCode.REVOKED;
  if (record.expiresAt !== null && record.expiresAt.getTime() <= now.getTime()) return VerifyCode.EXPIRED;
  if (record.storedStatus === StoredKeyStatus.DISABLED) return VerifyCode.DISABLED;
  if (record.ownerStatus !== UserStatus.ACTIVE || (record.ownerOwnerStatus ?? UserStatus.ACTIVE) !== UserStatus.ACTIVE) {
    return VerifyCode.OWNER_DISABLED;
  }
  if (!ipAllowed(record.allowedCidrs, request.ip)) return VerifyCode.IP_NOT_ALLOWED;
  if (request.permissions && !coversAll(effectivePermissions(record), request.permissions)) {
    return VerifyCode.INSUFFICIENT_PERMISSIONS;
  }
  if (record.remaining !== null && record.remaining <= 0) return VerifyCode.USAGE_EXCEEDED;
  return VerifyCode.VALID;
}

export class KeyVerificationService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly pepper: string,
  ) {}

  async lookup(secret: string): Promise<KeyRecord | null> {
    const rows = (await this.dataSource.query(KEY_QUERY, [hashKey(this.pepper, secret)])) as KeyRow[];
    return rows[0] ? toRecord(rows[0]) : null;
  }

  async verify(secret: string, request: VerifyRequest = {}): Promise<VerifyOutcome> {
    if (!parseKey(secret)) return { code: VerifyCode.MALFORMED, record: null, permissions: [] };
    const record = await this.lookup(secret);
    if (!record) return { code: VerifyCode.NOT_FOUND, record: null, permissions: [] };
    const code = evaluate(record, request, new Date());
    const usable = code === VerifyCode.VALID || code === VerifyCode.INSUFFICIENT_PERMISSIONS;
    return { code, record, permissions: usable ? effectivePermissions(record) : [] };
  }
}
