import { randomUUID } from 'node:crypto';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import { GraphQLError, getOperationAST, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import { WebSocketServer, type WebSocket } from 'ws';
import { authenticate, presentedKey } from '../auth/authenticate';
import type { GraphQLContext, Principal, RequestMeta } from '../auth/context';
import type { Services } from '../services';
import { DomainError } from '../services/errors';
import { auditDenials, buildContext } from './context';
import { formatError } from './errors';
import { requestMeta } from './http';

const CLOSE_FORBIDDEN = 4403;

interface ConnectionState {
  /** Kept in memory only, to verify the key again for every operation */
  secret: string;
  principal: Principal;
  meta: RequestMeta;
  /** Operation ids are unique only within one connection */
  operations: Map<string, GraphQLContext>;
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
  const wsServer = new WebSocketServer({ server: httpServer, path: '/graphql' });
  const states = new WeakMap<object, ConnectionState>();

  const cleanup = useServer<Record<string, unknown>, { request: IncomingMessage; socket: WebSocket }>(
    {
      schema: deps.schema,
      onConnect: async (ctx) => {
        const meta = requestMeta(ctx.extra.request, deps.trustProxy);
        const authorization = ctx.connectionParams?.authorization;
        const apiKey = ctx.connectionParams?.['x-api-key'];
        try {
          const key = presentedKey(typeof authorization === 'string' ? authorization : null, typeof apiKey === 'string' ? apiKey : null);
          states.set(ctx, { secret: key ?? '', principal: await authenticate(deps.services, key, meta), meta, operations: new Map() });
          return true;
        } catch {
          return false; // graphql-ws closes with 4403 Forbidden
        }
      },
      // Every operation is verified like an HTTP request: a key revoked, disabled or narrowed while
      // the socket is open takes effect on its next operation, and a rejected key loses the socket.
      onSubscribe: async (ctx) => {
        const state = states.get(ctx)!;
        try {
          state.principal = await authenticate(deps.services, state.secret, { ...state.meta, requestId: randomUUID() });
          return undefined;
        } catch (error) {
          if (!(error instanceof DomainError)) throw error;
          if (error.code !== 'RATE_LIMITED') ctx.extra.socket.close(CLOSE_FORBIDDEN, 'Forbidden: the API key was rejected');
          return [new GraphQLError(error.message, { extensions: { ...error.extensions, code: error.code } })];
        }
      },
      context: (ctx, id) => {
        const state = states.get(ctx)!;
        const context = buildContext(deps.dataSource, deps.services, state.principal, { ...state.meta, requestId: randomUUID() });
        state.operations.set(id, context);
        return context;
      },
      onNext: async (ctx, id, payload, args, result) => {
        const context = states.get(ctx)?.operations.get(id);
        if (context && result.errors) {
          const operation = getOperationAST(args.document, args.operationName ?? undefined);
          await auditDenials(context, result.errors, payload.operationName ?? null, operation);
        }
        return formatResult(result);
      },
      onComplete: (ctx, id) => {
        states.get(ctx)?.operations.delete(id);
      },
      onError: (_ctx, _id, _payload, errors) => errors.map((error) => formatError(error.toJSON(), error)),
    },
    wsServer,
  );

  return {
    close: async () => {
      await cleanup.dispose();
      await new Promise<void>((resolve) => wsServer.close(() => resolve()));
    },
  };
}
