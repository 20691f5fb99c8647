import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticate, presentedKey } from '../auth/authenticate';
import type { Principal, RequestMeta } from '../auth/context';
import type { Services } from '../services';
import { DomainError } from '../services/errors';
import { errorBody } from './errors';

/** Every answer is for its caller alone and of its moment: no cache may keep it. */
export function send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra });
  res.end(body);
}

/** Every value of the Authorization and X-API-Key headers: Node keeps only the first of repeated Authorization headers. */
export function keyHeaders(req: IncomingMessage): [string[], string[]] {
  const authorizations: string[] = [];
  const apiKeys: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') authorizations.push(raw[i + 1]!);
    else if (name.length === 9 && name.toLowerCase() === 'x-api-key') apiKeys.push(raw[i + 1]!);
  }
  return [authorizations, apiKeys];
}

/**
 * Authenticates from the key headers; on failure answers 401 (or 429 when rate-limited) in the
 * GraphQL error shape and returns null. Synchronous when authentication is.
 */
export function authenticateRequest(
  req: IncomingMessage,
  res: ServerResponse,
  services: Services,
  meta: RequestMeta,
  type = 'application/json; charset=utf-8',
): Principal | null | Promise<Principal | null> {
  const refused = (error: unknown): null => {
    if (!(error instanceof DomainError)) throw error;
    const limited = error.code === 'RATE_LIMITED';
    // RFC 9110: a 401 names the scheme that would work; a 429 says when to come back.
    const hint: Record<string, string> = limited ? { 'retry-after': String(error.extensions.retryAfterSeconds ?? 1) } : { 'www-authenticate': 'Bearer' };
    send(res, limited ? 429 : 401, type, errorBody(error.code as 'UNAUTHENTICATED', error.message, error.extensions), { 'x-request-id': meta.requestId, ...hint });
    return null;
  };
  try {
    const principal = authenticate(services, presentedKey(...keyHeaders(req)), meta);
    return principal instanceof Promise ? principal.catch(refused) : principal;
  } catch (error) {
    return refused(error);
  }
}
