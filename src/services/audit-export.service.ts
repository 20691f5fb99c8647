import type { DataSource } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { auditEventBody } from './audit.service';

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

  /** Events in id order, read in keyset batches: memory stays constant however many rows there are. */
  async *events(from: Date | null, to: Date | null): AsyncGenerator<AuditEventEntity> {
    let afterId = '0';
    for (;;) {
      const query = this.dataSource.manager.createQueryBuilder(AuditEventEntity, 'e').where('e.id > :afterId', { afterId });
      if (from) query.andWhere('e.occurred_at >= :from', { from });
      if (to) query.andWhere('e.occurred_at < :to', { to });
      const batch = await query.orderBy('e.id', 'ASC').limit(BATCH).getMany();
      for (const event of batch) yield event;
      if (batch.length < BATCH) return;
      afterId = batch[batch.length - 1]!.id;
    }
  }
}
