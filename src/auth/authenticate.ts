import { AuditOutcome, VerifyCode } from '../entities/enums';
import type { Services } from '../services';
import type { VerifyOutcome } from '../services/key-verification.service';
import { RateLimitedError, UnauthenticatedError } from '../services/errors';
import { anonymousActor, type Principal, type RequestMeta } from './context';

/** A request naming two different keys: whichever one a proxy in front checked, neither is used. */
export const CONFLICTING_KEYS = Symbol('conflicting keys');

export type PresentedKey = string | null | typeof CONFLICTING_KEYS;

/**
 * The key in `Authorization: Bearer <key>` or `X-API-Key: <key>` headers (every value given, as a
 * request may repeat a header); null when none is present.
 */
export function presentedKey(authorizations: readonly string[], apiKeyHeaders: readonly string[]): PresentedKey {
  let key: string | null = null;
  const take = (candidate: string | undefined): boolean => {
    if (!candidate) return true;
    if (key !== null && key !== candidate) return false;
    key = candidate;
    return true;
  };
  // Only the Bearer scheme carries a key; another scheme (a proxy's Basic) leaves X-API-Key to speak.
  // All of a Bearer credential is the key: "Bearer <key> junk" is a malformed key, not no key.
  for (const value of authorizations) if (!take(/^Bearer(?:\s+(.*))?$/is.exec(value.trim())?.[1]?.trim())) return CONFLICTING_KEYS;
  for (const value of apiKeyHeaders) if (!take(value.trim() || undefined)) return CONFLICTING_KEYS;
  return key;
}

/**
 * Authenticates a request exactly as verifyKey checks a key. A rejected key is an auth.failure
 * audit event naming the key when it exists, never the presented secret. Synchronous when the
 * key's verification is (a cached key with nothing to consume).
 */
export function authenticate(services: Services, secret: PresentedKey, meta: RequestMeta): Principal | Promise<Principal> {
  if (secret === CONFLICTING_KEYS) return refuseConflict(services, meta);
  if (!secret) return Promise.reject(new UnauthenticatedError());
  const outcome = services.verification.verifyNow(secret, { ip: meta.ip, resource: 'keyledger:graphql' });
  return outcome instanceof Promise ? outcome.then((settled) => principalOf(services, settled, meta)) : principalOf(services, outcome, meta);
}

function principalOf(services: Services, outcome: VerifyOutcome, meta: RequestMeta): Principal | Promise<Principal> {
  if (outcome.code === VerifyCode.VALID && outcome.record) {
    return { userId: outcome.record.ownerId, keyId: outcome.record.id, permissions: outcome.permissions, expiresAt: outcome.record.expiresAt };
  }
  return refuse(services, outcome, meta);
}

async function refuse(services: Services, outcome: VerifyOutcome, meta: RequestMeta): Promise<never> {
  await recordRefusal(services, meta, outcome.code, outcome.record);
  if (outcome.code === VerifyCode.RATE_LIMITED && outcome.rateLimit) {
    throw new RateLimitedError(Math.max(1, Math.ceil((outcome.rateLimit.resetAt.getTime() - Date.now()) / 1000)));
  }
  throw new KeyRejectedError(outcome.code);
}

async function refuseConflict(services: Services, meta: RequestMeta): Promise<never> {
  await recordRefusal(services, meta, 'CONFLICTING_KEYS', null);
  throw new UnauthenticatedError('The request carries two different keys: send one');
}

/** A rejected request is an auth.failure event naming the key when it exists, never the presented secret. */
async function recordRefusal(services: Services, meta: RequestMeta, code: string, key: VerifyOutcome['record']): Promise<void> {
  const actor = anonymousActor(meta, key?.id ?? null);
  const record = {
    action: 'auth.failure',
    outcome: AuditOutcome.DENIED,
    targetType: key ? 'api_key' : null,
    targetId: key?.id ?? null,
    details: { code, ...(key ? { keyName: key.name, ownerId: key.ownerId } : {}) },
  };
  // Past 100 a minute from one source (address, code, key), rejections are counted into one event.
  if (services.authFailures.admit(actor, record)) await services.audit.recordAlone(actor, record);
  else services.audit.observe(actor, record);
}

/** A presented key that did not verify, with the reason (kept off the wire beyond the message). */
export class KeyRejectedError extends UnauthenticatedError {
  constructor(readonly verifyCode: VerifyCode) {
    super(`The API key was rejected (${verifyCode})`);
  }
}
