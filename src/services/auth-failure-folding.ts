import { isIP } from 'node:net';
import type { Actor } from './actor';
import type { AuditRecord, AuditService } from './audit.service';
import { parseCidr } from './validation';

export interface FoldingSettings {
  /** Length of one window per source, code and key */
  windowMs: number;
  /** Rejections recorded one event each in a window; the rest are counted into one event */
  recordedPerWindow: number;
  /** Windows held at once: past this, new sources share one window per code */
  maxWindows: number;
}

export const DEFAULT_FOLDING: FoldingSettings = { windowMs: 60_000, recordedPerWindow: 100, maxWindows: 10_000 };

interface Window {
  startedAt: number;
  /** The window new sources share once maxWindows are open */
  shared: boolean;
  seen: number;
  folded: number;
  last: { actor: Actor; record: AuditRecord } | null;
}

/**
 * Where rejections come from, as one party: an IPv6 address's /64 (one host commonly holds a
 * whole /64, so per address would be 2^64 sources), an IPv4 address as it is.
 */
export function sourceOf(ip: string | null): string {
  if (!ip || isIP(ip) !== 6) return ip ?? '';
  return parseCidr(`${ip}/64`) ?? ip;
}

/**
 * A rejected key is an auth.failure event, but anyone who can reach the port can present keys,
 * and the log is append-only. So per source (address, or IPv6 /64), code and key, the first
 * rejections of a window are recorded one event each; later ones are counted, and the window's
 * count is written as one more auth.failure event (details.repeats, with the window's bounds)
 * when it closes. With maxWindows sources open, new sources share one window per code.
 * Every rejection is still in the log, as itself or in a count; detectors hear each one as it
 * happens (AuditService.observe) and skip the count.
 */
export class AuthFailureFolding {
  private readonly windows = new Map<string, Window>();
  /** Counts whose write failed, written again at the next flush */
  private unwritten: Window[] = [];
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly audit: AuditService,
    private readonly onError: (error: unknown) => void,
    private readonly settings: FoldingSettings = DEFAULT_FOLDING,
  ) {
    this.timer = setInterval(() => void this.flush(false), Math.min(5_000, settings.windowMs));
    this.timer.unref();
  }

  /** true: record this rejection as an event of its own now; false: it is counted into its window. */
  admit(actor: Actor, record: AuditRecord, now = Date.now()): boolean {
    // Once closed nothing would write a count: every rejection is its own event again.
    if (this.closed) return true;
    const code = String(record.details?.code ?? '');
    let key = `${sourceOf(actor.ip)}|${code}|${record.targetId ?? ''}`;
    let window = this.open(key, now);
    if (!window && this.windows.size >= this.settings.maxWindows) {
      key = `*|${code}|`;
      window = this.open(key, now);
    }
    if (!window) {
      window = { startedAt: now, shared: key.startsWith('*|'), seen: 0, folded: 0, last: null };
      this.windows.set(key, window);
    }
    window.seen++;
    if (window.seen <= this.settings.recordedPerWindow) return true;
    window.folded++;
    window.last = { actor, record };
    return false;
  }

  /** The window under `key` if it is still open; one that has ended is written and forgotten. */
  private open(key: string, now: number): Window | undefined {
    const window = this.windows.get(key);
    if (!window || now - window.startedAt < this.settings.windowMs) return window;
    this.write(window);
    this.windows.delete(key);
    return undefined;
  }

  /** Writes the counts of closed windows (all of them with `all`, at shutdown), and any that failed before. */
  flush(all: boolean, now = Date.now()): Promise<void> {
    for (const window of this.unwritten.splice(0)) this.write(window);
    for (const [key, window] of this.windows) {
      if (!all && now - window.startedAt < this.settings.windowMs) continue;
      this.windows.delete(key);
      this.write(window);
    }
    return this.flushing;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.flush(true);
  }

  private write(window: Window): void {
    if (!window.last || window.folded === 0) return;
    const { actor, record } = window.last;
    const summary: AuditRecord = {
      ...record,
      details: {
        ...record.details,
        repeats: window.folded,
        ...(window.shared ? { fromManySources: true } : {}),
        windowStart: new Date(window.startedAt).toISOString(),
        windowSeconds: this.settings.windowMs / 1000,
      },
    };
    this.flushing = this.flushing
      .then(() => this.audit.recordAlone(actor, summary))
      .catch((error: unknown) => {
        this.onError(error);
        // Kept for the next flush: a count is not lost to one failed write.
        if (!this.closed) this.unwritten.push(window);
      });
  }
}
