import { ActorType } from '../entities/enums';

/** Who is acting and from where; every service call that changes or reads protected data takes one. */
export interface Actor {
  type: ActorType;
  userId: string | null;
  keyId: string | null;
  /** Effective permissions at this moment (the key's, bounded by its owner's) */
  permissions: readonly string[];
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
}

export const SYSTEM_ACTOR: Actor = Object.freeze({
  type: ActorType.SYSTEM,
  userId: null,
  keyId: null,
  permissions: ['*'],
  ip: null,
  userAgent: null,
  requestId: null,
});
