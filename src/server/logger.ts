import pino, { type DestinationStream, type Logger } from 'pino';

/** Key headers are redacted wherever a request might be logged; secrets never reach a log line. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'keyledger' },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["x-api-key"]', '*.authorization', '*.secret', '*.key'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
