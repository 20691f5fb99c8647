import { randomUUID } from 'node:crypto';
import Negotiator from 'negotiator';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { HeaderMap, type ApolloServer } from '@apollo/server';
import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import type { GraphQLContext, RequestMeta } from '../auth/context';
import type { Services } from '../services';
import { normalizeIp } from '../services/validation';
import { handleAuditExport } from './audit-export';
import { authenticateRequest, send } from './respond';
import { buildContext } from './context';
import { documentGuardError } from './document-guard';
import { databaseUnavailable, databaseUnreachable, errorBody, UNAVAILABLE_RETRY_SECONDS } from './errors';
import type { VerifyFastPath } from './fast-verify';
import type { Metrics } from './metrics';
import { quoteInput } from '../auth/key-format';

/** The largest request body (HTTP) or message (WebSocket) read. */
export const MAX_BODY_BYTES = 1024 * 1024;

interface PendingAnswer {
  res: ServerResponse;
  contentType: string;
  body: string;
  requestId: string;
}

export interface HttpDeps {
  apollo: ApolloServer<GraphQLContext>;
  dataSource: DataSource;
  services: Services;
  logger: Logger;
  metrics: Metrics;
  trustProxy: boolean;
  isReady: () => Promise<boolean>;
  fastVerify?: VerifyFastPath;
}

/**
 * The client address: the socket's, or with TRUST_PROXY the address our proxy saw, i.e. the
 * right-most X-Forwarded-For entry (entries to its left are whatever the client sent).
 */
export function clientIp(req: IncomingMessage, trustProxy: boolean): string | null {
  if (trustProxy) {
    const forwarded = req.headers['x-forwarded-for'];
    const joined = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
    const ip = normalizeIp(withoutZone(joined?.split(',').at(-1)?.trim()));
    if (ip) return ip;
  }
  let ip = socketIps.get(req.socket);
  if (ip === undefined) socketIps.set(req.socket, (ip = normalizeIp(withoutZone(req.socket.remoteAddress))));
  return ip;
}

/** A link-local peer's address carries its zone (fe80::1%eth0): the address is what identifies it. */
function withoutZone(address: string | undefined): string | undefined {
  return address?.replace(/%.*$/, '');
}

/** A kept-alive connection's address, normalised once rather than on each of its requests. */
const socketIps = new WeakMap<Socket, string | null>();

export function requestMeta(req: IncomingMessage, trustProxy: boolean): RequestMeta {
  const userAgent = req.headers['user-agent'];
  // Bounded, but past the 512 characters audit keeps: a key across that cut is blanked whole first.
  return { requestId: randomUUID(), ip: clientIp(req, trustProxy), userAgent: userAgent ? quoteInput(userAgent, 1024) : null };
}

const JSON_TYPE = 'application/json; charset=utf-8';
const GRAPHQL_RESPONSE_TYPE = 'application/graphql-response+json; charset=utf-8';
/** The types Apollo offers, as it names them: negotiator matches Accept parameters against these. */
const APOLLO_OFFERS = [JSON_TYPE, GRAPHQL_RESPONSE_TYPE, 'application/json; callbackSpec=1.0; charset=utf-8'];

/** The type a client prefers of those we answer in, chosen exactly as Apollo chooses for its own answers. */
function responseType(req: IncomingMessage): string {
  const accept = req.headers.accept;
  const graphqlResponse = accept !== undefined && /graphql-response\+json/i.test(accept) && new Negotiator({ headers: { accept } }).mediaType(APOLLO_OFFERS) === GRAPHQL_RESPONSE_TYPE;
  return graphqlResponse ? GRAPHQL_RESPONSE_TYPE : JSON_TYPE;
}


class BodyTooLarge extends Error {}

/** Events rather than `for await`: this runs on every verification, and the iterator costs. */
function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

export function createRequestHandler(deps: HttpDeps) {
  const { apollo, logger, metrics } = deps;
  const fastAnswers = metrics.fastVerify;
  // Metric children by label, resolved once: looking labels up costs on every request.
  const counted = new Map<string, { inc(): void }>();
  const timed = new Map<string, { observe(seconds: number): void }>();
  const countRequest = (route: string, status: number) => {
    const id = `${route} ${status}`;
    let child = counted.get(id);
    if (!child) counted.set(id, (child = metrics.httpRequests.labels(route, String(status))));
    child.inc();
  };
  const timeRequest = (route: string, seconds: number) => {
    let child = timed.get(route);
    if (!child) timed.set(route, (child = metrics.requestDuration.labels(route)));
    child.observe(seconds);
  };

  /**
   * Verify answers are written together once the event loop has read every request that arrived
   * with them: a client waiting for several is woken once for the lot instead of once each, and
   * on loopback that wakeup was half the CPU of a verification (measured).
   */
  const pendingAnswers: PendingAnswer[] = [];
  const writeAnswers = () => {
    for (const { res, contentType, body, requestId } of pendingAnswers.splice(0)) {
      if (res.destroyed) continue;
      try {
        res.writeHead(200, ['content-type', contentType, 'content-length', String(Buffer.byteLength(body)), 'x-request-id', requestId, 'cache-control', 'no-store']);
        res.end(body);
      } catch (error) {
        // One answer that cannot be written must not cost the others theirs.
        logger.error({ err: error, requestId }, 'answer could not be written');
        res.destroy();
      }
    }
  };
  const answerSoon = (res: ServerResponse, contentType: string, body: string, requestId: string) => {
    if (pendingAnswers.push({ res, contentType, body, requestId }) === 1) setImmediate(writeAnswers);
  };

  async function graphql(req: IncomingMessage, res: ServerResponse, meta: RequestMeta): Promise<number> {
    const type = responseType(req);
    const headers = { 'x-request-id': meta.requestId };
    if (req.method !== 'GET' && req.method !== 'POST') {
      send(res, 405, type, errorBody('BAD_REQUEST', 'GraphQL accepts GET and POST'), { ...headers, allow: 'GET, POST' });
      return 405;
    }
    const authenticated = authenticateRequest(req, res, deps.services, meta, type);
    const principal = authenticated instanceof Promise ? await authenticated : authenticated;
    if (!principal) return res.statusCode;

    let body: unknown = undefined;
    if (req.method === 'POST') {
      let raw: string;
      try {
        raw = await readBody(req);
      } catch (error) {
        if (!(error instanceof BodyTooLarge)) throw error;
        send(res, 413, type, errorBody('BAD_REQUEST', `The request body exceeds ${MAX_BODY_BYTES} bytes`), headers);
        return 413;
      }
      // Media types are case-insensitive (RFC 9110).
      const contentType = (req.headers['content-type'] ?? '').toLowerCase();
      if (contentType.includes('application/json') || contentType.includes('application/graphql-response+json')) {
        try {
          body = JSON.parse(raw);
        } catch {
          send(res, 400, type, errorBody('BAD_REQUEST', 'The request body is not valid JSON'), headers);
          return 400;
        }
      } else body = raw;
    }

    if (req.method === 'POST' && deps.fastVerify) {
      const accept = req.headers.accept;
      const answered = deps.fastVerify(body, Array.isArray(accept) ? undefined : accept, { principal, services: deps.services, callerIp: meta.ip });
      // Its failure once verifying began is thrown to handle(): 503 for the database, else 500.
      const fast = answered instanceof Promise ? await answered : answered;
      if (fast) {
        fastAnswers.inc();
        answerSoon(res, fast.contentType, fast.body, meta.requestId);
        return 200;
      }
    }

    const url = new URL(req.url ?? '/', 'http://localhost');
    // Before Apollo validates: a document that would make validation quadratic is refused here.
    const query = req.method === 'POST' ? (body as { query?: unknown } | null)?.query : url.searchParams.get('query');
    const refused = typeof query === 'string' ? documentGuardError(query) : null;
    if (refused) {
      send(res, 400, type, errorBody('GRAPHQL_VALIDATION_FAILED', refused.message), headers);
      return 400;
    }
    const headerMap = new HeaderMap();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined) continue;
      const joined = Array.isArray(value) ? value.join(', ') : value;
      headerMap.set(name, name === 'content-type' ? joined.toLowerCase() : joined);
    }
    const context = buildContext(deps.dataSource, deps.services, principal, meta);
    const result = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: { method: req.method, headers: headerMap, search: url.search, body },
      context: async () => context,
    });
    const status = result.status ?? 200;
    // Answers are per principal: never stored by a cache (Apollo's cache-control plugin is off).
    const outHeaders: Record<string, string> = { ...headers, 'cache-control': 'no-store' };
    for (const [name, value] of result.headers) outHeaders[name] = value;
    if (result.body.kind === 'complete') {
      res.writeHead(status, { ...outHeaders, 'content-length': Buffer.byteLength(result.body.string) });
      res.end(result.body.string);
    } else {
      res.writeHead(status, outHeaders);
      for await (const chunk of result.body.asyncIterator) res.write(chunk);
      res.end();
    }
    return status;
  }

  return async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const url = req.url ?? '/';
    const path = url === '/graphql' ? url : url.split('?')[0];
    let route = 'other';
    let status = 404;
    try {
      if (path === '/graphql') {
        route = 'graphql';
        status = await graphql(req, res, requestMeta(req, deps.trustProxy));
      } else if (path === '/audit/export') {
        route = 'audit_export';
        status = await handleAuditExport(req, res, deps.services, requestMeta(req, deps.trustProxy));
      } else if (path === '/healthz') {
        route = 'healthz';
        status = 200;
        send(res, status, 'application/json', '{"status":"ok"}');
      } else if (path === '/readyz') {
        route = 'readyz';
        const ready = await deps.isReady();
        status = ready ? 200 : 503;
        send(res, status, 'application/json', JSON.stringify({ status: ready ? 'ready' : 'not ready' }));
      } else if (path === '/metrics') {
        route = 'metrics';
        status = 200;
        send(res, status, metrics.registry.contentType, await metrics.registry.metrics());
      } else {
        send(res, 404, 'application/json', errorBody('NOT_FOUND', `No route ${req.method} ${path}`));
      }
    } catch (error) {
      // The database down (checking a key needs it) is the server's trouble, and passing: 503, retry soon.
      const unavailable = databaseUnavailable(error);
      status = unavailable ? 503 : 500;
      // Every request fails alike while the database is down: the log says so once an interval.
      logger.error({ err: error, route, outage: databaseUnreachable(error) }, 'request failed');
      if (res.headersSent) res.destroy();
      else if (unavailable) {
        send(res, 503, 'application/json', errorBody('INTERNAL_SERVER_ERROR', 'The database is unavailable: retry shortly'), { 'retry-after': String(UNAVAILABLE_RETRY_SECONDS) });
      } else send(res, 500, 'application/json', errorBody('INTERNAL_SERVER_ERROR', 'Internal server error'));
    } finally {
      countRequest(route, status);
      timeRequest(route, Number(process.hrtime.bigint() - started) / 1e9);
    }
  };
}
