import pino, { type DestinationStream, type LogFn, type Logger } from 'pino';
import { redactKeys } from '../auth/key-format';

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

interface Held {
  /** When the last line for this message was written */
  at: number;
  heldBack: number;
  /** Writes the held-back count (with the last held call's fields) now */
  write: (() => void) | null;
  timer: NodeJS.Timeout | null;
}

interface OutageThrottle {
  logMethod(this: Logger, args: Parameters<LogFn>, method: LogFn, level: number): void;
  /** Writes every count still held back (at shutdown: an unref'd timer would not) */
  flush(): void;
}

/**
 * While the database is unreachable every request fails alike, and a line each (thousands a
 * second of verifications) would flood the log when it matters most. A failure logged with
 * `outage: true` is written once per interval for its level and message; the like ones held back
 * meanwhile are written as one line with their count (`heldBack`) when the interval ends.
 */
function outageThrottle(intervalMs: number): OutageThrottle {
  const held = new Map<string, Held>();
  const release = (entry: Held) => {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = null;
    entry.at = Date.now();
    const write = entry.write;
    entry.write = null;
    entry.heldBack = 0;
    write?.();
  };
  return {
    logMethod(args, method, level) {
      const [fields, message, ...rest] = args as unknown[];
      if (typeof message !== 'string' || typeof fields !== 'object' || fields === null || (fields as { outage?: unknown }).outage !== true) {
        return method.apply(this, args);
      }
      const key = `${level} ${message}`;
      const now = Date.now();
      const entry = held.get(key);
      if (!entry || now - entry.at >= intervalMs) {
        held.set(key, { at: now, heldBack: 0, write: null, timer: null });
        return method.apply(this, args);
      }
      const heldBack = ++entry.heldBack;
      entry.write = () => method.apply(this, [{ ...fields, heldBack }, message, ...rest] as Parameters<LogFn>);
      entry.timer ??= setTimeout(() => release(entry), entry.at + intervalMs - now).unref();
    },
    flush() {
      for (const entry of held.values()) if (entry.write) release(entry);
    },
  };
}

const throttles = new WeakMap<Logger, OutageThrottle>();

/** Writes the outage counts a logger still holds back; call it last thing before the process exits. */
export function flushHeldBackLogs(logger: Logger): void {
  throttles.get(logger)?.flush();
}

/** Key headers are redacted wherever a request might be logged; secrets never reach a log line. */
export function createLogger(level: string, destination?: DestinationStream, outageIntervalMs = OUTAGE_LOG_INTERVAL_MS): Logger {
  const throttle = outageThrottle(outageIntervalMs);
  const logger = pino(
    {
      level,
      base: { service: 'keyledger' },
      hooks: { logMethod: throttle.logMethod },
      serializers: { err: errorWithoutSecrets },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["x-api-key"]', '*.authorization', '*.secret', '*.key'],
        censor: '[redacted]',
      },
    },
    destination,
  );
  throttles.set(logger, throttle);
  return logger;
}
