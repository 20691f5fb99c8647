import pino, { type DestinationStream, type LogFn, type Logger } from 'pino';
import { redactKeys } from '../auth/key-format';
import { databaseUnavailable } from './errors';

/** How often one failure message is logged while the database is unreachable. */
export const OUTAGE_LOG_INTERVAL_MS = 10_000;

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

function causedByOutage(error: unknown): boolean {
  try {
    return databaseUnavailable(error);
  } catch {
    return false;
  }
}

/**
 * While the database is unreachable every request fails alike, and a line each (thousands a
 * second of verifications) would flood the log when it matters most. Each message caused by the
 * outage is written once per interval, with how many like it were held back since the last.
 */
function outageThrottle(now: () => number): (this: Logger, args: Parameters<LogFn>, method: LogFn) => void {
  const lastWritten = new Map<string, { at: number; heldBack: number }>();
  return function logMethod(args, method) {
    const [fields, message] = args as unknown[];
    const outage = typeof message === 'string' && typeof fields === 'object' && fields !== null && causedByOutage((fields as { err?: unknown }).err);
    if (!outage) return method.apply(this, args);
    const last = lastWritten.get(message);
    if (last && now() - last.at < OUTAGE_LOG_INTERVAL_MS) {
      last.heldBack++;
      return;
    }
    lastWritten.set(message, { at: now(), heldBack: 0 });
    const heldBack = last?.heldBack ?? 0;
    method.apply(this, (heldBack > 0 ? [{ ...fields, heldBack }, message] : args) as Parameters<LogFn>);
  };
}

/** Key headers are redacted wherever a request might be logged; secrets never reach a log line. */
export function createLogger(level: string, destination?: DestinationStream, now: () => number = Date.now): Logger {
  return pino(
    {
      level,
      base: { service: 'keyledger' },
      hooks: { logMethod: outageThrottle(now) },
      serializers: { err: errorWithoutSecrets },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["x-api-key"]', '*.authorization', '*.secret', '*.key'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
