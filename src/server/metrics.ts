import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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
    fastVerify: new Counter({
      name: 'keyledger_verify_fast_path_total',
      help: 'GraphQL requests answered by the verification fast path (the rest go through Apollo)',
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

/** The Splunk forwarder's lag, read from the database when /metrics is scraped. */
export function registerForwarderLag(metrics: Metrics, lag: () => Promise<{ events: number; seconds: number }>): void {
  let last = { events: 0, seconds: 0 };
  const refresh = async () => {
    last = await lag().catch(() => last);
  };
  new Gauge({
    name: 'keyledger_audit_forwarder_lag_events',
    help: 'Audit events not yet accepted by the Splunk HEC collector',
    registers: [metrics.registry],
    async collect() {
      await refresh();
      this.set(last.events);
    },
  });
  new Gauge({
    name: 'keyledger_audit_forwarder_lag_seconds',
    help: 'Age of the oldest audit event not yet accepted by the Splunk HEC collector',
    registers: [metrics.registry],
    collect() {
      this.set(last.seconds);
    },
  });
}

/** The verification cache's size and hit counts, read when /metrics is scraped. */
export function registerKeyCache(metrics: Metrics, cache: { size: number; stats: Record<string, number> }): void {
  new Gauge({
    name: 'keyledger_key_cache_entries',
    help: 'Key records cached for verification',
    registers: [metrics.registry],
    collect() {
      this.set(cache.size);
    },
  });
  new Gauge({
    name: 'keyledger_key_cache_lookups',
    help: 'Verification cache lookups since start, by result (hits, misses, negativeHits, invalidations)',
    labelNames: ['result'],
    registers: [metrics.registry],
    collect() {
      for (const [result, count] of Object.entries(cache.stats)) this.set({ result }, count);
    },
  });
}

/** Changes run again after a deadlock or serialisation failure: each is a lock-order question worth asking. */
export function registerRetries(metrics: Metrics, audit: { retried: number }): void {
  new Counter({
    name: 'keyledger_transaction_retries_total',
    help: 'Transactions run again after PostgreSQL aborted them as a deadlock or serialisation victim',
    registers: [metrics.registry],
    collect() {
      this.reset();
      this.inc(audit.retried);
    },
  });
}

/** Detector hits a full batch kept from the other instances: their bursts then add up more slowly. */
export function registerDetectorGossip(metrics: Metrics, gossip: { unshared: number }): void {
  new Counter({
    name: 'keyledger_detector_hits_unshared_total',
    help: 'Burst and rule hits not sent to the other instances because their batch was full',
    registers: [metrics.registry],
    collect() {
      this.reset();
      this.inc(gossip.unshared);
    },
  });
}

/** Usage records: written, dropped (buffer full or a batch failing for good) and waiting. */
export function registerUsage(metrics: Metrics, usage: { written: number; dropped: number; buffered: number }): void {
  new Gauge({
    name: 'keyledger_usage_records',
    help: 'Usage records since start, by state (written, dropped) and now buffered',
    labelNames: ['state'],
    registers: [metrics.registry],
    collect() {
      this.set({ state: 'written' }, usage.written);
      this.set({ state: 'dropped' }, usage.dropped);
      this.set({ state: 'buffered' }, usage.buffered);
    },
  });
}

/** Authenticated WebSocket connections open now, read when /metrics is scraped. */
export function registerWebSockets(metrics: Metrics, ws: { openConnections(): number }): void {
  new Gauge({
    name: 'keyledger_websocket_connections',
    help: 'WebSocket connections open with an accepted key',
    registers: [metrics.registry],
    collect() {
      this.set(ws.openConnections());
    },
  });
}

/** Live subscriptions by feed, and those refused for its limit (MAX_AUDIT_TAILS): a full feed shows before auditors complain. */
export function registerLiveFeeds(metrics: Metrics, feeds: Record<string, { size: number; refused: number }>): void {
  new Gauge({
    name: 'keyledger_live_subscriptions',
    help: 'Live subscriptions running now, by feed (audit_tail, alerts)',
    labelNames: ['feed'],
    registers: [metrics.registry],
    collect() {
      for (const [feed, { size }] of Object.entries(feeds)) this.set({ feed }, size);
    },
  });
  new Counter({
    name: 'keyledger_live_subscriptions_refused_total',
    help: 'Live subscriptions refused for their feed\'s limits (on this server, for one user, or turned off), by feed',
    labelNames: ['feed'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const [feed, { refused }] of Object.entries(feeds)) this.inc({ feed }, refused);
    },
  });
}
