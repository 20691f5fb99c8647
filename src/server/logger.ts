import pino, { type DestinationStream, type Logger } from 'pino';
import { redactKeys } from '../auth/key-format';

/**
 * Errors as pino writes them, minus what may carry a client's input: a failed statement's
 * parameters, and anything key-shaped in the rest (a driver's message quotes the value it refused).
 */
function errorWithoutSecrets(error: Error): Record<string, unknown> {
  const { parameters: _parameters, ...serialized } = pino.stdSerializers.err(error) as unknown as Record<string, unknown>;
  return JSON.parse(redactKeys(JSON.stringify(serialized))) as Record<string, unknown>;
}

/** Key headers are redacted wherever a request might be logged; secrets never reach a log line. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'keyledger' },
      serializers: { err: errorWithoutSecrets },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["x-api-key"]', '*.authorization', '*.secret', '*.key'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
