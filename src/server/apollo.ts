import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled } from '@apollo/server/plugin/disabled';
import { GraphQLError, OperationTypeNode, type GraphQLSchema } from 'graphql';
import type { Logger } from 'pino';
import type { GraphQLContext } from '../auth/context';
import { auditDenials } from './context';
import { PARSE_OPTIONS } from './document-guard';
import { databaseUnavailable, databaseUnreachable, formatError, UNAVAILABLE_RETRY_SECONDS } from './errors';
import { operationRefusal } from './query-cost';
import type { Metrics } from './metrics';

function observabilityPlugin(logger: Logger, metrics: Metrics): ApolloServerPlugin<GraphQLContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, schema, operation }) {
          if (operation?.operation === OperationTypeNode.SUBSCRIPTION) {
            throw new GraphQLError('Subscriptions are served over WebSocket (graphql-ws) at /graphql', {
              extensions: { code: 'BAD_REQUEST', http: { status: 400 } },
            });
          }
          const refused = operationRefusal(schema, document, request.operationName, request.variables);
          if (refused) throw refused;
        },
        async didEncounterErrors({ errors, contextValue, request, operation, document }) {
          await auditDenials(contextValue, errors, request.operationName ?? null, operation, document);
          if (errors.some((error) => databaseUnavailable(error.originalError))) contextValue.databaseOutage = true;
          for (const error of errors) {
            // The code the client will see: a domain error's is only attached when formatted.
            if (formatError(error.toJSON(), error).extensions?.code === 'INTERNAL_SERVER_ERROR') {
              // Logged server-side only; the client sees a generic message and the request id.
              const err = error.originalError ?? error;
              logger.error({ requestId: contextValue.requestId, err, outage: databaseUnreachable(err) }, 'unexpected error');
            }
          }
        },
        async willSendResponse({ response, contextValue }) {
          if (response.body.kind !== 'single') return;
          // Nothing answered because the database is away: passing, and the server's trouble, as
          // the same outage is when checking the key (503, Retry-After). Partial data stays 200.
          if (contextValue.databaseOutage && response.body.singleResult.data == null) {
            response.http.status = 503;
            response.http.headers.set('retry-after', String(UNAVAILABLE_RETRY_SECONDS));
          }
          for (const error of response.body.singleResult.errors ?? []) {
            const code = String(error.extensions?.code);
            metrics.graphqlErrors.inc({ code });
            if (code === 'INTERNAL_SERVER_ERROR') (error.extensions as Record<string, unknown>).requestId = contextValue.requestId;
          }
        },
      };
    },
  };
}

export async function startApollo(schema: GraphQLSchema, logger: Logger, metrics: Metrics): Promise<ApolloServer<GraphQLContext>> {
  const apollo = new ApolloServer<GraphQLContext>({
    schema,
    // Keys travel in headers, never cookies: a cross-site request cannot carry them, so CSRF
    // prevention would only block legitimate GET clients.
    csrfPrevention: false,
    // The process's own SIGTERM handler closes everything in order (usage flushed, audit sealed);
    // Apollo's would re-raise the signal and kill the process halfway through.
    stopOnTerminationSignals: false,
    includeStacktraceInErrorResponses: false,
    introspection: true,
    formatError,
    parseOptions: PARSE_OPTIONS,
    // Responses are per principal and never cacheable; the plugin would also wrap every field resolver.
    plugins: [observabilityPlugin(logger, metrics), ApolloServerPluginCacheControlDisabled()],
    logger: {
      debug: () => {},
      info: () => {},
      warn: (message) => logger.warn(String(message)),
      error: (message) => logger.error(String(message)),
    },
  });
  await apollo.start();
  return apollo;
}
