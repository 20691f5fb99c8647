import { ActorType } from '../entities/enums';
import type { Actor } from '../services/actor';
import type { Loaders } from '../services/loaders';
import type { Services } from '../services';

/** The authenticated caller: a key, its owner, and what the key may do right now. */
export interface Principal {
  userId: string;
  keyId: string;
  permissions: string[];
  /** When the key lapses: a connection outliving its request stops delivering then */
  expiresAt?: Date | null;
}

/** Whether the principal's key has expired (a subscription may outlive it). */
export function keyLapsed(principal: Principal, now = Date.now()): boolean {
  return principal.expiresAt !== null && principal.expiresAt !== undefined && principal.expiresAt.getTime() <= now;
}

export interface RequestMeta {
  requestId: string;
  ip: string | null;
  userAgent: string | null;
}

export interface GraphQLContext extends RequestMeta {
  principal: Principal;
  actor: Actor;
  loaders: Loaders;
  /** Forgets what this request's loaders hold: what one mutation read, the next may change */
  renewLoaders?: () => void;
  services: Services;
  /** authz.denied events already written for this request, so one denial is recorded once */
  deniedAudited: Set<string>;
  /**
   * Permission refusals as they happen (the auth checker's, and root fields'): a refused non-null root field nulls
   * the whole answer, and graphql-js then drops the errors of the fields still running, which
   * must be audited all the same.
   */
  refusals: Refusal[];
  /** Root fields still resolving: their refusals are known once these settle */
  rootsInFlight: Array<Promise<void>>;
  /** A resolver failed because the database could not be reached: an answer with no data is then 503 */
  databaseOutage?: boolean;
  /** Live streams this operation opened: its connection's re-check ends those no longer allowed (WebSocket only) */
  streams?: LiveStream[];
}

export interface Refusal {
  originalError: unknown;
  path: ReadonlyArray<string | number>;
  /** The refused root field (`Mutation.revokeApiKey`) and its arguments, when a root field refused */
  root?: { field: string; args: Record<string, unknown> };
}

export interface LiveStream {
  allowed(): boolean;
  end(): void;
}

export function actorOf(principal: Principal, meta: RequestMeta): Actor {
  return {
    type: ActorType.USER,
    userId: principal.userId,
    keyId: principal.keyId,
    permissions: principal.permissions,
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  };
}

export function anonymousActor(meta: RequestMeta, keyId: string | null = null): Actor {
  return {
    type: ActorType.ANONYMOUS,
    userId: null,
    keyId,
    permissions: [],
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  };
}
