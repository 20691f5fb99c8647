import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import type { DestinationStream, Logger } from 'pino';
import type { DataSource } from 'typeorm';
import type { Config } from '../config';
import { createDataSource, hasPendingMigrations, migrate } from '../db/data-source';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../db/embedded';
import { deploymentId } from '../db/deployment';
import { maintainPartitions } from '../db/partitions';
import { checkPepper } from '../db/pepper-check';
import { buildKeyledgerSchema } from '../schema/build-schema';
import { createServices, type Services } from '../services';
import { bootstrap } from '../services/bootstrap.service';
import { SplunkForwarder } from '../services/splunk-forwarder';
import { AUDIT_SEALED_CHANNEL } from '../services/audit.service';
import { startApollo } from './apollo';
import { createVerifyFastPath } from './fast-verify';
import { createRequestHandler } from './http';
import { createLogger, flushHeldBackLogs } from './logger';
import { createMetrics, registerForwarderLag, registerKeyCache, registerRetries,
  registerDetectorGossip, registerLiveFeeds, registerUsage, registerWebSockets, type Metrics } from './metrics';
import { PgEventBus, RedisEventBus, type EventBus } from '../services/event-bus';
import { PgListener } from '../services/pg-listener';
import { connectRedis } from './redis';
import type { Redis } from 'ioredis';
import { attachWebSocket } from './ws';

export interface StartOptions {
  /** Where pino writes; stdout by default */
  logDestination?: DestinationStream;
  /** Where the one-time bootstrap key line goes; stdout by default */
  announce?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  dataSource: DataSource;
  services: Services;
  metrics: Metrics;
  logger: Logger;
  /** The bootstrap key when this start generated one (first start, no BOOTSTRAP_ADMIN_KEY) */
  generatedAdminKey: string | null;
  close(): Promise<void>;
}

/** Opens the database, applies migrations, bootstraps, and serves. Stops the database again on failure. */
export async function startServer(config: Config, options: StartOptions = {}): Promise<RunningServer> {
  const logger = createLogger(config.logLevel, options.logDestination);
  const metrics = createMetrics();
  const announce = options.announce ?? ((line: string) => process.stdout.write(line + '\n'));

  let embedded: EmbeddedDatabase | null = null;
  let dataSource: DataSource | null = null;
  let redis: Redis | null = null;
  let listener: PgListener | null = null;
  let bus: EventBus | null = null;
  try {
    await assertPortFree(config.host, config.port);
    // Every dependency is reached before anything changes: an unreachable Redis stops the start before any migration runs.
    const redisError = (error: unknown) => logger.warn({ err: error }, 'redis connection error');
    if (config.redisUrl) redis = await connectRedis(config.redisUrl, redisError);
    if (config.databaseUrl === null) {
      embedded = await startEmbeddedPostgres(config.dataDir, (line) => logger.debug({ postgres: line.trim() }, 'embedded postgres'));
      logger.info({ dataDir: config.dataDir }, 'embedded PostgreSQL started');
    }
    dataSource = createDataSource(config.databaseUrl ?? embedded!.url, {
      onQuery: () => metrics.dbQueries.inc(),
      onError: (message) => {
        metrics.dbErrors.inc();
        logger.debug({ message }, 'query failed');
      },
    }, config.databasePoolSize);
    await dataSource.initialize().catch((error: unknown) => {
      throw new Error(`cannot reach PostgreSQL at ${config.databaseUrl ? 'DATABASE_URL' : 'the embedded server'}: ${error instanceof Error ? error.message : String(error)}`);
    });
    const ds = dataSource;
    const applied = await migrate(dataSource);
    if (applied.length > 0) logger.info({ applied }, 'migrations applied');
    const weakPepper = await checkPepper(dataSource, config.keyPepper, config.keyPepperSource);
    if (weakPepper) logger.error(weakPepper);
    const partitions = () =>
      maintainPartitions(ds).catch((error: unknown) => logger.error({ err: error }, 'partition maintenance failed'));
    await partitions();
    const partitionTimer = setInterval(() => void partitions(), 6 * 3600 * 1000);
    partitionTimer.unref();

    // The key cache only runs while this instance hears every other instance's changes.
    let keyCache: { goLive(): void; goDark(): void } | null = null;
    listener = new PgListener(config.databaseUrl ?? embedded!.url, {
      onUp: () => keyCache?.goLive(),
      onDown: (error) => {
        keyCache?.goDark();
        logger.warn({ err: error }, 'change feed lost; key cache dropped until it reconnects');
      },
      onHandlerError: (error) => logger.error({ err: error }, 'a notification could not be handled'),
    });
    const deployment = redis ? await deploymentId(dataSource) : null;
    bus = redis && deployment ? new RedisEventBus(redis, redisError, deployment) : new PgEventBus(listener, (statement) => ds.query(statement));
    const services = createServices(dataSource, {
      ...config,
      redis,
      rateLimitKeyPrefix: deployment ? `keyledger:${deployment}:rl:` : undefined,
      bus,
      liveFeedLimits: { maxAuditTails: config.maxAuditTails, maxAlertSubscriptions: config.maxAlertSubscriptions },
      onBackgroundError: (error) => logger.error({ err: error }, 'background write failed'),
    });
    keyCache = services.verification.cache;
    const forwarder = config.splunkHec
      ? new SplunkForwarder({
          dataSource,
          url: config.splunkHec.url,
          token: config.splunkHec.token,
          pollIntervalMs: config.splunkHec.pollIntervalMs,
          onError: (error) => logger.warn({ err: error }, 'splunk HEC delivery failed'),
        })
      : null;
    // Delivery follows each seal, on whichever instance sealed; polling stays as the fallback.
    if (forwarder) bus.subscribe(AUDIT_SEALED_CHANNEL, () => forwarder.wake());
    services.keyChanges.listenOn(listener);
    services.alerting.listenOn(listener);
    await listener.start();
    await bus.ready();
    registerKeyCache(metrics, services.verification.cache);
    registerUsage(metrics, services.usage);
    registerRetries(metrics, services.audit);
    registerLiveFeeds(metrics, { audit_tail: services.alerting.auditFeed, alerts: services.alerting.alertFeed });
    if (services.alerting.gossip) registerDetectorGossip(metrics, services.alerting.gossip);
    const feed = listener;
    const boot = await bootstrap(services, config.bootstrapAdminKey);
    if (boot.created) logger.info('bootstrap: created user admin with the admin role');
    await services.alerting.start();
    // Events left staged by a crash between a commit and its seal are sealed here.
    await services.audit.seal();
    const sealTimer = setInterval(() => void services.audit.sealQuietly(), 1000);
    sealTimer.unref();
    if (forwarder) {
      registerForwarderLag(metrics, () => forwarder.lag());
      forwarder.start();
    }
    if (boot.generatedKey) announce(`BOOTSTRAP ADMIN KEY (shown once, store it now): ${boot.generatedKey}`);

    const schema = await buildKeyledgerSchema();
    const apollo = await startApollo(schema, logger, metrics);
    let migrationsApplied = true;
    // Draining: a load balancer asking now is told to send new work elsewhere.
    let draining = false;
    const isReady = async () => {
      if (draining) return false;
      try {
        await ds.query('SELECT 1');
        if (migrationsApplied) migrationsApplied = !(await hasPendingMigrations(ds));
        return migrationsApplied;
      } catch {
        return false;
      }
    };
    const httpServer: Server = createServer(
      createRequestHandler({
        apollo,
        dataSource,
        services,
        logger,
        metrics,
        trustProxy: config.trustProxy,
        isReady,
        fastVerify: createVerifyFastPath(schema),
      }),
    );
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(config.port, config.host, () => resolve());
    });
    // Attached once listening: a failed listen is then one clear error, not also the WebSocket server's.
    const ws = attachWebSocket(httpServer, { schema, dataSource, services, logger, trustProxy: config.trustProxy });
    registerWebSockets(metrics, ws);
    const port = (httpServer.address() as AddressInfo).port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${host}:${port}/graphql`;
    logger.info({ url }, 'keyledger listening');

    const closeAll = async () => {
      draining = true;
      clearInterval(partitionTimer);
      clearInterval(sealTimer);
      // Requests and WebSocket operations already received are answered, within one deadline.
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, DRAIN_MS).unref());
      await Promise.all([ws.close(deadline), drain(httpServer, deadline)]);
      await apollo.stop();
      // Only now: while requests were answered the cache had to keep hearing invalidations.
      await feed.stop();
      await services.alerting.close();
      await services.usage.close();
      await services.authFailures.close();
      await services.audit.close();
      await forwarder?.stop();
      await ds.destroy();
      await bus?.close();
      redis?.disconnect();
      await embedded?.stop();
    };
    let closing: Promise<void> | null = null;
    return {
      url,
      port,
      dataSource,
      services,
      metrics,
      logger,
      generatedAdminKey: boot.generatedKey,
      close: () =>
        (closing ??= closeAll().finally(() => {
          // Counts an unref'd timer still holds would otherwise never be written.
          flushHeldBackLogs(logger);
        })),
    };
  } catch (error) {
    await listener?.stop().catch(() => undefined);
    await bus?.close().catch(() => undefined);
    redis?.disconnect();
    await dataSource?.destroy().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    throw error;
  }
}

/** A port already taken is reported before anything starts (migrations, background work), not after. */
async function assertPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new Error(`PORT ${port} on ${host} is already in use`) : error),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/** How long requests already received may take to be answered once shutdown begins. */
const DRAIN_MS = 10_000;

/**
 * Stops accepting, answers every request already received (a mutation that commits is answered,
 * not cut off), closes each connection as it falls idle, and cuts whatever is left at DRAIN_MS.
 */
function drain(httpServer: Server, deadline: Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    const idle = setInterval(() => httpServer.closeIdleConnections(), 50);
    let drained = false;
    void deadline.then(() => {
      if (!drained) httpServer.closeAllConnections();
    });
    // A kept-alive client's next request is still answered, then its connection is closed.
    httpServer.on('request', (_req: IncomingMessage, res: ServerResponse) => {
      res.shouldKeepAlive = false;
    });
    httpServer.close(() => {
      drained = true;
      clearInterval(idle);
      resolve();
    });
    httpServer.closeIdleConnections();
  });
}
