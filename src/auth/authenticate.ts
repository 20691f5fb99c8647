import { AuditOutcome, VerifyCode } from '../entities/enums';
import type { Services } from '../services';
import type { VerifyOutcome } from '../services/key-verification.service';
import { RateLimitedError, UnauthenticatedError } from '../services/errors';
import { anonymousActor, type Principal, type RequestMeta } from './context';

/** `Authorization: Bearer <key>` or `X-API-Key: <key>`; null when neither is present. */
export function presentedKey(authorization: string | undefined | null, apiKeyHeader: string | undefined | null): string | null {
  // Only the Bearer scheme carries a key; another scheme (a proxy's Basic) leaves X-API-Key to speak.
  const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
  return bearer ?? (apiKeyHeader?.trim() || null);
}

/**
 * Authenticates a request exactly as verifyKey checks a key. A rejected key is an auth.failure
 * audit event naming the key when it exists, never the presented secret. Synchronous when the
 * key's verification is (a cached key with nothing to consume).
 */
export function authenticate(services: Services, secret: string | null, meta: RequestMeta): Principal | Promise<Principal> {
  if (!secret) return Promise.reject(new UnauthenticatedError());
  const outcome = services.verification.verifyNow(secret, { ip: meta.ip, resource: 'keyledger:graphql' });
  return outcome instanceof Promise ? outcome.then((settled) => principalOf(services, settled, meta)) : principalOf(services, outcome, meta);
}

function principalOf(services: Services, outcome: VerifyOutcome, meta: RequestMeta): Principal | Promise<Principal> {
  if (outcome.code === VerifyCode.VALID && outcome.record) {
    return { userId: outcome.record.ownerId, keyId: outcome.record.id, permissions: outcome.permissions };
  }
  return refuse(services, outcome, meta);
}

async function refuse(services: Services, outcome: VerifyOutcome, meta: RequestMeta): Promise<never> {
  const actor = anonymousActor(meta, outcome.record?.id ?? null);
  const record = {
    action: 'auth.failure',
    outcome: AuditOutcome.DENIED,
    targetType: outcome.record ? 'api_key' : null,
    targetId: outcome.record?.id ?? null,
    details: { code: outcome.code, ...(outcome.record ? { keyName: outcome.record.name, ownerId: outcome.record.ownerId } : {}) },
  };
  // Past 100 a minute from one source (address, code, key), rejections are counted into one event.
  if (services.authFailures.admit(actor, record)) await services.audit.recordAlone(actor, record);
  else services.audit.observe(actor, record);
  if (outcome.code === VerifyCode.RATE_LIMITED && outcome.rateLimit) {
    throw new RateLimitedError(Math.max(1, Math.ceil((outcome.rateLimit.resetAt.getTime() - Date.now()) / 1000)));
  }
  throw new KeyRejectedError(outcome.code);
}

/** A presented key that did not verify, with the reason (kept off the wire beyond the message). */
export class KeyRejectedError extends UnauthenticatedError {
  constructor(readonly verifyCode: VerifyCode) {
    super(`The API key was rejected (${verifyCode})`);
  }
}
