import type { IncomingMessage, ServerResponse } from 'node:http';
import { actorOf, type RequestMeta } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import { AuditOutcome } from '../entities/enums';
import type { Services } from '../services';
import { formatLine, type ExportFormat } from '../services/audit-export.service';
import { DateTimeISO } from '../schema/scalars';
import { errorBody } from './errors';
import { authenticateRequest, send } from './respond';
import { quoteInput } from '../auth/key-format';

const EXPORT_PARAMETERS = ['from', 'to', 'format'];

function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** The DateTimeISO scalar's own rule, so the export accepts exactly what GraphQL accepts. */
function parseDate(name: string, raw: string | null): Date | null | string {
  if (raw === null || raw === '') return null;
  try {
    return DateTimeISO.parseValue(raw) as Date;
  } catch {
    return `${name} must be an ISO-8601 date-time such as 2026-11-23T08:00:00Z`;
  }
}

/**
 * GET /audit/export?from=&to=&format=ndjson|splunk: streams events to holders of audit:export,
 * one JSON object per line, respecting backpressure. The export itself is an audit event.
 */
export async function handleAuditExport(req: IncomingMessage, res: ServerResponse, services: Services, meta: RequestMeta): Promise<number> {
  const json = (status: number, body: string) => {
    send(res, status, 'application/json; charset=utf-8', body, { 'x-request-id': meta.requestId });
    return status;
  };
  if (req.method !== 'GET') return json(405, errorBody('BAD_REQUEST', 'Use GET'));
  const principal = await authenticateRequest(req, res, services, meta);
  if (!principal) return res.statusCode;
  const actor = actorOf(principal, meta);
  if (!coveredBy(principal.permissions, 'audit:export')) {
    await services.audit.recordAlone(actor, {
      action: 'authz.denied',
      outcome: AuditOutcome.DENIED,
      details: { operation: 'GET /audit/export', required: ['audit:export'] },
    });
    return json(403, errorBody('FORBIDDEN', 'GET /audit/export requires audit:export', { required: ['audit:export'] }));
  }

  const params = new URL(req.url ?? '/', 'http://localhost').searchParams;
  // A parameter the export does not know (a filter an auditor expected) is refused rather than
  // silently ignored, and two values for one parameter rather than one of them chosen.
  const unknown = [...params.keys()].find((name) => !EXPORT_PARAMETERS.includes(name));
  if (unknown !== undefined) {
    return json(400, errorBody('BAD_USER_INPUT', `${JSON.stringify(quoteInput(unknown, 60))} is not a parameter of the export (from, to, format)`, { field: quoteInput(unknown, 60) }));
  }
  const repeated = EXPORT_PARAMETERS.find((name) => params.getAll(name).length > 1);
  if (repeated) return json(400, errorBody('BAD_USER_INPUT', `${repeated} is given more than once`, { field: repeated }));
  const format = (params.get('format') ?? 'ndjson') as ExportFormat;
  if (format !== 'ndjson' && format !== 'splunk') return json(400, errorBody('BAD_USER_INPUT', 'format must be ndjson or splunk', { field: 'format' }));
  const from = parseDate('from', params.get('from'));
  const to = parseDate('to', params.get('to'));
  for (const [field, value] of [['from', from], ['to', to]] as const) {
    if (typeof value === 'string') return json(400, errorBody('BAD_USER_INPUT', value, { field }));
  }
  const fromDate = from as Date | null;
  const toDate = to as Date | null;
  if (fromDate && toDate && fromDate.getTime() > toDate.getTime()) {
    return json(400, errorBody('BAD_USER_INPUT', 'from must not be after to', { field: 'from' }));
  }

  await services.audit.recordAlone(actor, {
    action: 'audit.export',
    targetType: 'audit',
    details: { format, from: fromDate?.toISOString() ?? null, to: toDate?.toISOString() ?? null },
  });
  await services.audit.settled();
  res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store', 'x-request-id': meta.requestId });
  for await (const event of services.auditExport.events(fromDate, toDate)) {
    if (res.destroyed) break;
    // Wait for the client to take what was written; stop if it goes away.
    if (!res.write(formatLine(event, format))) await drainedOrClosed(res);
  }
  res.end();
  return 200;
}
