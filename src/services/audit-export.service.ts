import type { DataSource } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { auditEventBody } from './audit.service';
import { EVENT_COLUMNS } from './audit-query.service';

export type ExportFormat = 'ndjson' | 'splunk';

const BATCH = 1000;

/** One event with the contract's field names (relations as actorId / actorKeyId) and its chain links. */
export function exportRecord(event: AuditEventEntity): Record<string, unknown> {
  return { ...auditEventBody(event), prevHash: event.prevHash, hash: event.hash };
}

/** Splunk HTTP Event Collector shape; the event id in `fields` lets duplicates be dropped downstream. */
export function splunkRecord(event: AuditEventEntity): Record<string, unknown> {
  return {
    time: event.occurredAt.getTime() / 1000,
    host: 'keyledger',
    source: 'keyledger',
    sourcetype: 'keyledger:audit',
    event: exportRecord(event),
    fields: { event_id: event.id, action: event.action, outcome: event.outcome },
  };
}

export function formatLine(event: AuditEventEntity, format: ExportFormat): string {
  return JSON.stringify(format === 'splunk' ? splunkRecord(event) : exportRecord(event)) + '\n';
}

export class AuditExportService {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Events in id order, read in keyset batches: memory stays constant however many rows there are.
   * Rows, not entities: an id the log holds twice (added by hand; integrity reports it) is
   * exported twice, and the batch after does not lose the second of a pair cut at its edge.
   */
  async *events(from: Date | null, to: Date | null): AsyncGenerator<AuditEventEntity> {
    let afterId = '0';
    const rows = (where: string, params: Record<string, unknown>, limit: number | null) => {
      const query = this.dataSource.manager.createQueryBuilder().select(EVENT_COLUMNS).from('audit_events', 'e').where(where, params);
      if (from) query.andWhere('e.occurred_at >= :from', { from });
      if (to) query.andWhere('e.occurred_at < :to', { to });
      if (limit !== null) query.orderBy('e.id', 'ASC').limit(limit);
      return query.getRawMany<Record<string, unknown>>();
    };
    const toEvent = (row: Record<string, unknown>) => Object.assign(new AuditEventEntity(), row);
    for (;;) {
      const batch = await rows('e.id > :afterId', { afterId }, BATCH);
      if (batch.length === 0) return;
      const lastId = batch[batch.length - 1]!.id as string;
      for (const row of batch) if (row.id !== lastId) yield toEvent(row);
      for (const row of await rows('e.id = :lastId', { lastId }, null)) yield toEvent(row);
      if (batch.length < BATCH) return;
      afterId = lastId;
    }
  }
}
