import { BadInputError } from './errors';
import {
  requireCidrs,
  requireFuture,
  requireIds,
  requireMetadata,
  requirePermissions,
  requirePositiveInt,
  requireName,
} from './validation';

export interface RateLimitSettings {
  limit: number;
  windowSeconds: number;
}

export interface RefillSettings {
  amount: number;
  intervalSeconds: number;
}

/** The settings a key is created with, and that updateApiKey may change. */
export interface KeySettingsInput {
  name?: string | null;
  roleIds?: string[] | null;
  permissions?: string[] | null;
  expiresAt?: Date | null;
  allowedCidrs?: string[] | null;
  rateLimit?: RateLimitSettings | null;
  remaining?: number | null;
  refill?: RefillSettings | null;
  metadata?: Record<string, unknown> | null;
}

/** Validated settings; a property is present only when the input named it. */
export interface KeySettings {
  name?: string;
  roleIds?: string[];
  grantedPermissions?: string[];
  expiresAt?: Date | null;
  allowedCidrs?: string[];
  rateLimit?: RateLimitSettings | null;
  remaining?: number | null;
  refill?: RefillSettings | null;
  metadata?: Record<string, unknown> | null;
}

const NAME_MAX = 200;
const DAY_SECONDS = 86_400;

/** Validates every named field, naming the field in the error; writes nothing. */
export function parseKeySettings(input: KeySettingsInput): KeySettings {
  const out: KeySettings = {};
  if (input.name !== undefined && input.name !== null) out.name = requireName('name', input.name, NAME_MAX);
  if (input.roleIds !== undefined && input.roleIds !== null) out.roleIds = requireIds('roleIds', input.roleIds);
  if (input.permissions !== undefined && input.permissions !== null) {
    out.grantedPermissions = requirePermissions('permissions', input.permissions);
  }
  if (input.expiresAt !== undefined) out.expiresAt = requireFuture('expiresAt', input.expiresAt);
  if (input.allowedCidrs !== undefined && input.allowedCidrs !== null) out.allowedCidrs = requireCidrs('allowedCidrs', input.allowedCidrs);
  if (input.rateLimit !== undefined) {
    out.rateLimit = input.rateLimit && {
      limit: requirePositiveInt('rateLimit.limit', input.rateLimit.limit),
      windowSeconds: requirePositiveInt('rateLimit.windowSeconds', input.rateLimit.windowSeconds, 30 * DAY_SECONDS),
    };
  }
  if (input.remaining !== undefined) {
    const remaining = input.remaining;
    if (remaining !== null && (!Number.isInteger(remaining) || remaining < 0 || remaining > 2_000_000_000)) {
      throw new BadInputError('remaining', 'remaining must be a whole number from 0 to 2000000000');
    }
    out.remaining = remaining;
  }
  if (input.refill !== undefined) {
    out.refill = input.refill && {
      amount: requirePositiveInt('refill.amount', input.refill.amount),
      intervalSeconds: requirePositiveInt('refill.intervalSeconds', input.refill.intervalSeconds, 365 * DAY_SECONDS),
    };
  }
  if (input.metadata !== undefined) out.metadata = requireMetadata('metadata', input.metadata);
  return out;
}
