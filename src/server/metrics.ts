import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per server instance, so several servers in one process (tests) never share counters. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'keyledger_' });
  return {
    registry,
    dbQueries: new Counter({ name: 'keyledger_db_queries_total', help: 'SQL statements sent to PostgreSQL', registers: [registry] }),
    dbErrors: new Counter({ name: 'keyledger_db_errors_total', help: 'SQL statements that failed', registers: [registry] }),
    httpRequests: new Counter({
      name: 'keyledger_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['route', 'status'],
      registers: [registry],
    }),
    graphqlErrors: new Counter({
      name: 'keyledger_graphql_errors_total',
      help: 'GraphQL errors returned, by code',
      labelNames: ['code'],
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'keyledger_http_request_duration_seconds',
      help: 'HTTP request duration',
      labelNames: ['route'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
