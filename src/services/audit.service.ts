import { createHash } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { AuditOutcome } from '../entities/enums';
import { redactKeys } from '../auth/key-format';
import type { Actor } from './actor';
import { canonicalJson } from './canonical-json';

export interface AuditRecord {
  action: string;
  outcome?: AuditOutcome;
  targetType?: string | null;
  targetId?: string | null;
  details?: Record<string, unknown> | null;
}

export const GENESIS_HASH = '0'.repeat(64);
/** Serialises appends so each event chains onto the one committed before it. */
const CHAIN_LOCK = 7_400_002;

function scrubSecrets(details: Record<string, unknown> | null | undefined): Record<string, unknown> | null {
  if (!details) return null;
  const json = canonicalJson(details).replace(/\\u0000/g, '');
  // Anything shaped like a key is blanked, whatever a caller put in details.
  return JSON.parse(redactKeys(json)) as Record<string, unknown>;
}

/** An event's fields with the contract's names, as hashed and as exported (without the chain links). */
export function auditEventBody(event: Omit<AuditEventEntity, 'hash' | 'prevHash'>): Record<string, unknown> {
  return {
    id: event.id,
    occurredAt: event.occurredAt.toISOString(),
    action: event.action,
    outcome: event.outcome,
    actorType: event.actorType,
    actorId: event.actorId,
    actorKeyId: event.actorKeyId,
    targetType: event.targetType,
    targetId: event.targetId,
    ip: event.ip,
    userAgent: event.userAgent,
    requestId: event.requestId,
    details: event.details,
  };
}

/** sha256 over the previous event's hash and this event's body in a fixed canonical serialisation. */
export function eventHash(event: Omit<AuditEventEntity, 'hash'>): string {
  return createHash('sha256').update(event.prevHash).update('\n').update(canonicalJson(auditEventBody(event))).digest('hex');
}

export class AuditService {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Appends an event inside the caller's transaction: if the change rolls back, so does its event,
   * and if the event cannot be written, the change fails.
   */
  async record(tx: EntityManager, actor: Actor, record: AuditRecord): Promise<AuditEventEntity> {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    const [head] = (await tx.query(
      `SELECT nextval('audit_events_id_seq')::text AS id,
              coalesce((SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1), $1) AS prev_hash`,
      [GENESIS_HASH],
    )) as Array<{ id: string; prev_hash: string }>;
    const event = new AuditEventEntity();
    event.id = head!.id;
    event.occurredAt = new Date();
    event.action = record.action;
    event.outcome = record.outcome ?? AuditOutcome.SUCCESS;
    event.actorType = actor.type;
    event.actorId = actor.userId;
    event.actorKeyId = actor.keyId;
    event.targetType = record.targetType ?? null;
    event.targetId = record.targetId ?? null;
    event.ip = actor.ip;
    event.userAgent = actor.userAgent?.slice(0, 512) ?? null;
    event.requestId = actor.requestId;
    event.details = scrubSecrets(record.details);
    event.prevHash = head!.prev_hash;
    event.hash = eventHash(event);
    await tx.query(
      `INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type,
                                 target_id, ip, user_agent, request_id, details, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
      [event.id, event.occurredAt, event.action, event.outcome, event.actorType, event.actorId, event.actorKeyId,
       event.targetType, event.targetId, event.ip, event.userAgent, event.requestId,
       event.details === null ? null : JSON.stringify(event.details), event.prevHash, event.hash],
    );
    return event;
  }

  /** For events with no surrounding change: denials and authentication failures. */
  async recordAlone(actor: Actor, record: AuditRecord): Promise<AuditEventEntity> {
    return this.dataSource.transaction((tx) => this.record(tx, actor, record));
  }
}
