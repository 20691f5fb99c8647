import pino, { type DestinationStream, type Logger } from 'pino';
import { redactKeys } from '../auth/key-format';

/**
 * Errors as pino writes them, minus what may carry a client's input: a failed statement's
 * parameters (at any depth), and anything key-shaped in the rest (a driver's message quotes the
 * value it refused). Never throws: a logger that throws turns a logged failure into a crash.
 */
function errorWithoutSecrets(error: unknown): unknown {
  try {
    return withoutSecrets(pino.stdSerializers.err(error as Error), new WeakSet(), 0);
  } catch {
    return { message: '[an error that could not be serialised]' };
  }
}

function withoutSecrets(value: unknown, seen: WeakSet<object>, depth: number): unknown {
  if (typeof value === 'string') return redactKeys(value);
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  if (ArrayBuffer.isView(value)) return '[binary]';
  if (seen.has(value) || depth > 8) return '[omitted]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => withoutSecrets(item, seen, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(value)) {
    if (name !== 'parameters') out[name] = withoutSecrets(field, seen, depth + 1);
  }
  return out;
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
