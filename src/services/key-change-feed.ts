import type { EntityManager } from 'typeorm';
import { AuditOutcome } from '../entities/enums';
import { withCommit, type AuditRecord, type ChangeHook } from './audit.service';
import { notifyStatement } from './sql-literal';
import type { Invalidation } from './key-cache';
import type { PgListener } from './pg-listener';

export const KEY_CHANGES_CHANNEL = 'keyledger_key_changes';

/**
 * What a successful audited change can alter in a verification result. Every change is audited,
 * so hanging invalidation on the audit record means no mutation can forget it.
 */
export function invalidationFor(record: AuditRecord): Invalidation | null {
  if ((record.outcome ?? AuditOutcome.SUCCESS) !== AuditOutcome.SUCCESS || !record.targetId) return null;
  switch (record.targetType) {
    case 'api_key':
      return { kind: 'key', id: record.targetId };
    // Status, roles and service accounts' keys all hang off the user.
    case 'user':
      return record.action === 'user.create' ? null : { kind: 'user', id: record.targetId };
    // A role's permissions reach any key through its owner or directly; rare, so drop everything.
    case 'role':
      return record.action === 'role.create' ? null : { kind: 'all' };
    default:
      return null;
  }
}

function parseInvalidation(payload: string): Invalidation {
  try {
    const parsed = JSON.parse(payload) as Invalidation;
    if (parsed.kind === 'all' || ((parsed.kind === 'key' || parsed.kind === 'user') && typeof parsed.id === 'string')) return parsed;
  } catch {
    // fall through: an unreadable notice must still invalidate
  }
  return { kind: 'all' };
}

/**
 * Keeps every instance's key cache right. Inside the changing transaction it sends a NOTIFY
 * (delivered to all instances only if the change commits); after the commit it invalidates this
 * instance's cache directly, so the change is in force here before the mutation returns.
 */
export class KeyChangeFeed implements ChangeHook {
  /** Told of every change, from this instance or another (open WebSocket connections re-check their key) */
  private readonly listeners: Array<(change: Invalidation) => void> = [];

  constructor(private readonly cache: { invalidate(change: Invalidation): void }) {}

  onChange(listener: (change: Invalidation) => void): void {
    this.listeners.push(listener);
  }

  private apply(change: Invalidation): void {
    this.cache.invalidate(change);
    for (const listener of this.listeners) listener(change);
  }

  async staged(tx: EntityManager, record: AuditRecord): Promise<void> {
    const change = invalidationFor(record);
    if (change) await withCommit(tx, notifyStatement(KEY_CHANGES_CHANNEL, JSON.stringify(change)));
  }

  committed(record: AuditRecord): void {
    const change = invalidationFor(record);
    if (change) this.apply(change);
  }

  listenOn(listener: PgListener): void {
    listener.on(KEY_CHANGES_CHANNEL, (payload) => this.apply(parseInvalidation(payload)));
  }
}
