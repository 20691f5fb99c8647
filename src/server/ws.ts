import { randomUUID } from 'node:crypto';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import {
  GraphQLError,
  OperationTypeNode,
  getOperationAST,
  getVariableValues,
  parse,
  validate,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLSchema,
} from 'graphql';
import type { SubscribePayload } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { WebSocketServer, type WebSocket } from 'ws';
import { KeyRejectedError, authenticate, presentedKey } from '../auth/authenticate';
import { actorOf, type GraphQLContext, type Principal, type RequestMeta } from '../auth/context';
import { VerifyCode } from '../entities/enums';
import type { Services } from '../services';
import { DomainError } from '../services/errors';
import { createLoaders, type Loaders } from '../services/loaders';
import { auditDenials, buildContext } from './context';
import { PARSE_OPTIONS, shapeError } from './document-guard';
import { databaseUnavailable, databaseUnreachable, formatError } from './errors';
import { keyHeaders } from './respond';
import { operationRefusal } from './query-cost';
import { MAX_BODY_BYTES, requestMeta } from './http';

const CLOSE_FORBIDDEN = 4403;
/** RFC 6455 "Try Again Later": the key is fine but its rate limit is spent (graphql-ws clients retry). */
const CLOSE_TRY_LATER = 1013;
const CLOSE_GOING_AWAY = 1001;
/** RFC 6455 internal error: the server failed (its database, say), not the client's key */
const CLOSE_INTERNAL_ERROR = 1011;
/** At shutdown, how long a client may take to answer our close frame before its socket is cut. */
const CLOSE_GRACE_MS = 1000;
/** How long a closed connection with operations still running is remembered (for shutdown to wait on). */
const FORGET_CLOSED_MS = 60_000;
/** Open connections are re-checked this often, besides on every change and at their key's expiry. */
const RECHECK_MS = 10_000;
/** setTimeout's longest delay; an expiry further off is met by the periodic re-check */
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * Operations running at once (subscriptions included): on one connection, and for one key over
 * all its connections to this instance. Each audit tail started is an audit event every other
 * tail receives, so without a bound one socket's subscriptions cost the server their square.
 */
export const MAX_OPERATIONS_PER_CONNECTION = 100;
export const MAX_OPERATIONS_PER_KEY = 300;
/** Subscriptions one key may start per STARTS_WINDOW_SECONDS on this instance: an audit tail started and completed at once is still an event every tail receives */
export const MAX_STARTS_PER_KEY = 300;
const STARTS_WINDOW_SECONDS = 10;
/** graphql-transport-ws: an id still in use by a running operation */
const CLOSE_SUBSCRIBER_EXISTS = 4409;
const SHARED_LOADERS_MS = 50;
/** Codes that leave a key usable in principle: limits speak per operation, not per connection. */
const STILL_USABLE = new Set<VerifyCode>([VerifyCode.VALID, VerifyCode.USAGE_EXCEEDED, VerifyCode.RATE_LIMITED]);

interface ConnectionState {
  /** Kept in memory only, to verify the key again for every operation */
  secret: string;
  principal: Principal;
  meta: RequestMeta;
  /** Operation ids are unique only within one connection */
  operations: Map<string, GraphQLContext>;
  /** Queries and mutations received and not yet answered, by id (a client may reuse an id): shutdown waits for them */
  unanswered: Map<string, number>;
  /** Called when `unanswered` empties (set while shutting down) */
  onAnswered: (() => void) | null;
  socket: WebSocket;
  /** How many operations run on this connection (graphql-ws counts one from the moment it is received until it ends) */
  running: () => number;
  /** Re-checks the connection when its key expires */
  expiry: NodeJS.Timeout | null;
  /** Ids of operations received and not yet ended, as this module saw them (graphql-ws forgets an id at the client's complete, before its operation has ended) */
  ids: Set<string>;
}

/**
 * What Apollo does for HTTP, for WebSocket operations: each way a request can be wrong gets its
 * contract code, as an error for that operation; graphql-ws alone would close the socket on a
 * syntax error and give the others no code.
 */
function prepareOperation(schema: GraphQLSchema, payload: SubscribePayload): ExecutionArgs | GraphQLError[] {
  const coded = (errors: readonly GraphQLError[], code: string) =>
    errors.map((error) => new GraphQLError(error.message, { nodes: error.nodes, source: error.source, positions: error.positions, extensions: { ...error.extensions, code } }));
  let document: DocumentNode;
  try {
    document = parse(payload.query, PARSE_OPTIONS);
  } catch (error) {
    // A RangeError: nesting deep enough to exhaust the parser's stack.
    return coded([error instanceof GraphQLError ? error : new GraphQLError('The document is nested too deeply to parse')], 'GRAPHQL_PARSE_FAILED');
  }
  const repeated = shapeError(document);
  if (repeated) return [repeated];
  const invalid = validate(schema, document);
  if (invalid.length > 0) return coded(invalid, 'GRAPHQL_VALIDATION_FAILED');
  const operation = getOperationAST(document, payload.operationName ?? undefined);
  if (!operation) {
    const message = payload.operationName ? `Unknown operation named "${payload.operationName}".` : 'Several operations: name the one to run (operationName).';
    return coded([new GraphQLError(message)], 'OPERATION_RESOLUTION_FAILURE');
  }
  const refused = operationRefusal(schema, document, payload.operationName, payload.variables);
  if (refused) return [refused];
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], payload.variables ?? {});
  if (coerced.errors) return coded(coerced.errors, 'BAD_USER_INPUT');
  return { schema, document, operationName: payload.operationName, variableValues: payload.variables };
}

/** Resolves once the socket is closed (at once if it already is). */
function closed(socket: WebSocket): Promise<void> {
  if (socket.readyState === socket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

function formatResult(result: ExecutionResult): ExecutionResult {
  if (!result.errors) return result;
  return { ...result, errors: result.errors.map((error) => formatError(error.toJSON(), error) as GraphQLError) };
}

/** graphql-transport-ws on /graphql. The key is checked once at connection_init, like an HTTP request's. */
export function attachWebSocket(
  httpServer: HttpServer,
  deps: { schema: GraphQLSchema; dataSource: DataSource; services: Services; logger: Logger; trustProxy: boolean },
) {
  // Bounded like an HTTP body: before connection_init nobody is authenticated yet.
  const wsServer = new WebSocketServer({ server: httpServer, path: '/graphql', maxPayload: MAX_BODY_BYTES });
  const states = new WeakMap<object, ConnectionState>();
  const open = new Set<ConnectionState>();
  const stateOfSocket = new WeakMap<WebSocket, ConnectionState>();
  let closing = false;
  /** Connections with queries or mutations received and not yet completed, open or not (a client may leave first) */
  const busy = new Set<ConnectionState>();
  const received = (state: ConnectionState, id: string) => {
    state.unanswered.set(id, (state.unanswered.get(id) ?? 0) + 1);
    busy.add(state);
  };
  /** An operation refused after it was received: graphql-ws reports no completion for it. */
  const notStarted = (state: ConnectionState, id: string) => {
    answered(state, id);
    state.ids.delete(id);
  };
  const answered = (state: ConnectionState, id: string) => {
    const left = (state.unanswered.get(id) ?? 0) - 1;
    if (left > 0) state.unanswered.set(id, left);
    else state.unanswered.delete(id);
    if (state.unanswered.size > 0) return;
    busy.delete(state);
    state.onAnswered?.();
  };

  // One event goes out to every subscriber in the same tick: loaders shared for a moment let their
  // relation fields (Alert.key, AuditEvent.actor …) cost one batched query, not one per subscriber.
  // Visibility is still decided per subscriber; the data is at most SHARED_LOADERS_MS old.
  let shared: { loaders: Loaders; at: number } | null = null;
  const sharedLoaders = (): Loaders => {
    const now = Date.now();
    if (!shared || now - shared.at > SHARED_LOADERS_MS) shared = { loaders: createLoaders(deps.dataSource), at: now };
    return shared.loaders;
  };

  // A subscription can stay open for days without another operation: when the key, its owner or
  // a role changes (here or on another instance), or the key expires, the connection is re-checked
  // and closed once the key no longer verifies.
  const recheck = async (state: ConnectionState) => {
    try {
      const { code, permissions, expiresAt } = await deps.services.verification.peek(state.secret, state.meta.ip);
      if (!STILL_USABLE.has(code)) {
        state.socket.close(CLOSE_FORBIDDEN, 'Forbidden: the API key was rejected');
        return;
      }
      // Running operations (subscriptions) see the new permissions for their next event.
      state.principal = { ...state.principal, permissions, expiresAt };
      watchExpiry(state);
      for (const context of state.operations.values()) {
        context.principal = state.principal;
        context.actor = actorOf(state.principal, context);
        // A stream whose permission went ends now, not at the next event its filter lets through.
        for (const stream of context.streams ?? []) if (!stream.allowed()) stream.end();
      }
    } catch (error) {
      deps.logger.warn({ err: error }, 'could not re-check a WebSocket connection');
    }
  };
  /** The connection is re-checked (and closed) the moment its key expires, not at the next periodic re-check. */
  const watchExpiry = (state: ConnectionState) => {
    if (state.expiry) clearTimeout(state.expiry);
    state.expiry = null;
    const expiresAt = state.principal.expiresAt;
    if (!expiresAt || !open.has(state)) return;
    const wait = expiresAt.getTime() - Date.now() + 1;
    if (wait < MAX_TIMER_MS) state.expiry = setTimeout(() => void recheck(state), Math.max(0, wait)).unref();
  };
  const starts = new RateLimiterMemory({ points: MAX_STARTS_PER_KEY, duration: STARTS_WINDOW_SECONDS, keyPrefix: 'ws-starts' });
  /** Why another operation may not start now, or null */
  const tooMany = (state: ConnectionState): string | null => {
    if (state.running() > MAX_OPERATIONS_PER_CONNECTION) {
      return `At most ${MAX_OPERATIONS_PER_CONNECTION} operations may run at once on one connection: complete some first`;
    }
    let forKey = 0;
    for (const other of open) if (other.principal.keyId === state.principal.keyId) forKey += other.running();
    return forKey > MAX_OPERATIONS_PER_KEY ? `At most ${MAX_OPERATIONS_PER_KEY} operations may run at once for one key: complete some first` : null;
  };
  /** Why another subscription may not start now, or null */
  const tooFast = async (state: ConnectionState): Promise<string | null> => {
    try {
      await starts.consume(state.principal.keyId);
      return null;
    } catch (error) {
      if (!(error instanceof RateLimiterRes)) throw error;
      return `At most ${MAX_STARTS_PER_KEY} subscriptions may start in ${STARTS_WINDOW_SECONDS} s for one key: retry in ${Math.ceil(error.msBeforeNext / 1000)} s`;
    }
  };
  // Every connection, whichever key changed: a rotation names the new key, yet may cut off an older one of its line.
  deps.services.keyChanges.onChange(() => {
    for (const state of open) void recheck(state);
  });
  const timer = setInterval(() => open.forEach((state) => void recheck(state)), RECHECK_MS);
  timer.unref();

  const cleanup = useServer<Record<string, unknown>, { request: IncomingMessage; socket: WebSocket }>(
    {
      schema: deps.schema,
      // Whatever NODE_ENV says: a close reason never carries an internal error's text.
      isProd: true,
      onConnect: async (ctx) => {
        const meta = requestMeta(ctx.extra.request, deps.trustProxy);
        // Named like the HTTP headers they stand for, so in any case (and so possibly twice).
        const param = (name: string) =>
          Object.entries(ctx.connectionParams ?? {}).flatMap(([given, value]) => (given.toLowerCase() === name && typeof value === 'string' ? [value] : []));
        const socket = ctx.extra.socket;
        try {
          // A key in the upgrade request's headers counts too: two different keys are refused.
          const [authorizations, apiKeys] = keyHeaders(ctx.extra.request);
          const key = presentedKey([...param('authorization'), ...authorizations], [...param('x-api-key'), ...apiKeys]);
          const principal = await authenticate(deps.services, key, meta);
          // Gone while its key was checked: graphql-ws has already closed it, keep nothing of it.
          if (socket.readyState !== socket.OPEN) return false;
          const state: ConnectionState = {
            secret: typeof key === 'string' ? key : '',
            principal,
            meta,
            operations: new Map(),
            unanswered: new Map(),
            onAnswered: null,
            socket,
            running: () => Object.keys(ctx.subscriptions).length,
            expiry: null,
            ids: new Set(),
          };
          states.set(ctx, state);
          stateOfSocket.set(socket, state);
          open.add(state);
          watchExpiry(state);
          return true;
        } catch (error) {
          if (!(error instanceof DomainError)) {
            deps.logger.error({ err: error, outage: databaseUnreachable(error) }, 'could not authenticate a WebSocket connection');
            // The database down is passing, as HTTP's 503 says: the client may connect again soon.
            if (databaseUnavailable(error)) socket.close(CLOSE_TRY_LATER, 'The database is unavailable: retry shortly');
            else socket.close(CLOSE_INTERNAL_ERROR, 'Internal server error');
          } else if (error.code === 'RATE_LIMITED') {
            socket.close(CLOSE_TRY_LATER, `Rate limited: retry in ${String(error.extensions.retryAfterSeconds ?? 1)} s`);
          }
          return false; // otherwise graphql-ws closes with 4403 Forbidden
        }
      },
      // Every operation is verified like an HTTP request: a key revoked, disabled or narrowed while
      // the socket is open takes effect on its next operation, and a rejected key loses the socket.
      onSubscribe: async (ctx, id, payload) => {
        const state = states.get(ctx)!;
        if (closing) {
          // Not started: the socket closes (1001) once what it already asked is answered, and the
          // client sends this again to another instance. Nothing is sent on a closed socket.
          await closed(state.socket);
          return [new GraphQLError('The server is shutting down')];
        }
        // An id whose operation has not ended yet, though the client completed it: a second stream
        // under one id would escape every count (and outlive the socket). The protocol's answer.
        if (state.ids.has(id)) {
          state.socket.close(CLOSE_SUBSCRIBER_EXISTS, `Subscriber for ${id.slice(0, 64)} already exists`);
          return [new GraphQLError('The operation id is in use')];
        }
        state.ids.add(id);
        // graphql-ws has registered this operation already, so a burst of them is counted whole.
        const refusal = tooMany(state);
        if (refusal) {
          state.ids.delete(id);
          return [new GraphQLError(refusal, { extensions: { code: 'RATE_LIMITED' } })];
        }
        received(state, id);
        try {
          state.principal = await authenticate(deps.services, state.secret, { ...state.meta, requestId: randomUUID() });
          watchExpiry(state);
        } catch (error) {
          notStarted(state, id);
          if (!(error instanceof DomainError)) {
            // An error of the server's (its database down): this operation fails, the socket stays.
            deps.logger.error({ err: error, outage: databaseUnreachable(error) }, 'could not authenticate a WebSocket operation');
            return [new GraphQLError('Internal server error', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })];
          }
          // Limits speak per operation; a key that no longer verifies loses the socket.
          const limited = error.code === 'RATE_LIMITED' || (error instanceof KeyRejectedError && error.verifyCode === VerifyCode.USAGE_EXCEEDED);
          if (!limited) ctx.extra.socket.close(CLOSE_FORBIDDEN, 'Forbidden: the API key was rejected');
          return [new GraphQLError(error.message, { extensions: { ...error.extensions, code: error.code } })];
        }
        let prepared = prepareOperation(deps.schema, payload);
        if (!Array.isArray(prepared) && getOperationAST(prepared.document, prepared.operationName ?? undefined)?.operation === OperationTypeNode.SUBSCRIPTION) {
          const refused = await tooFast(state);
          if (refused) prepared = [new GraphQLError(refused, { extensions: { code: 'RATE_LIMITED' } })];
        }
        if (Array.isArray(prepared)) notStarted(state, id);
        return prepared;
      },
      context: (ctx, id, _payload, args) => {
        const state = states.get(ctx)!;
        const subscription = getOperationAST(args.document, args.operationName ?? undefined)?.operation === OperationTypeNode.SUBSCRIPTION;
        const context = buildContext(deps.dataSource, deps.services, state.principal, { ...state.meta, requestId: randomUUID() },
          subscription ? sharedLoaders : undefined);
        state.operations.set(id, context);
        // A subscription runs until it ends or the socket does: shutdown does not wait for it.
        if (subscription) {
          context.streams = [];
          answered(state, id);
        }
        return context;
      },
      onNext: async (ctx, id, payload, args, result) => {
        const context = states.get(ctx)?.operations.get(id);
        if (context && result.errors) {
          const operation = getOperationAST(args.document, args.operationName ?? undefined);
          // A refusal changed nothing; one that cannot be recorded is logged, not a lost socket.
          await auditDenials(context, result.errors, payload.operationName ?? null, operation, args.document).catch((error: unknown) =>
            deps.logger.error({ err: error }, 'could not record a WebSocket refusal'));
        }
        return formatResult(result);
      },
      onComplete: (ctx, id) => {
        const state = states.get(ctx);
        state?.operations.delete(id);
        state?.ids.delete(id);
        if (state) answered(state, id);
      },
      onClose: (ctx) => {
        const state = states.get(ctx);
        if (!state) return;
        open.delete(state);
        if (state.expiry) clearTimeout(state.expiry);
        state.secret = ''; // nothing is verified again for a closed connection
        // An operation that failed inside graphql-ws never completes: its connection is not kept for ever.
        if (busy.has(state)) setTimeout(() => busy.delete(state), FORGET_CLOSED_MS).unref();
      },
      onError: (_ctx, _id, _payload, errors) => errors.map((error) => formatError(error.toJSON(), error)),
    },
    wsServer,
  );
  // graphql-ws prints a socket's protocol error (an oversized or malformed frame) to stderr with
  // console.error, so any client could flood it; ws closes such a socket itself (1009, 1002).
  // Registered after graphql-ws's own listener, this replaces it with one structured debug line.
  wsServer.on('connection', (socket: WebSocket) => {
    socket.removeAllListeners('error');
    socket.on('error', (error: Error) => deps.logger.debug({ reason: error.message }, 'WebSocket protocol error'));
  });

  /**
   * Until the connection's queries and mutations are answered, or the deadline. Not released by
   * the client going away: a mutation still running finishes (and commits or rolls back whole)
   * before shutdown closes the database under it.
   */
  const allAnswered = async (state: ConnectionState | undefined, deadline: Promise<void>) => {
    if (state && state.unanswered.size > 0) await Promise.race([new Promise<void>((resolve) => (state.onAnswered = resolve)), deadline]);
  };

  /** Closes a socket once its queries and mutations are answered (a write that commits is answered), or at the deadline. */
  const closeWhenAnswered = async (socket: WebSocket, deadline: Promise<void>) => {
    await allAnswered(stateOfSocket.get(socket), deadline);
    socket.close(CLOSE_GOING_AWAY, 'Going away');
    // A client that never answers the close frame does not hold the shutdown.
    setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
  };

  return {
    openConnections: () => open.size,
    /** Stops taking operations, answers those received (until `deadline`), then closes every socket. */
    close: async (deadline: Promise<void>) => {
      clearInterval(timer);
      closing = true;
      const sockets = [...wsServer.clients];
      // Connections already closed by their clients, with a mutation still running, are waited for too.
      const left = [...busy].filter((state) => !sockets.includes(state.socket));
      await Promise.all([...sockets.map((socket) => closeWhenAnswered(socket, deadline)), ...left.map((state) => allAnswered(state, deadline))]);
      await cleanup.dispose();
    },
  };
}
