import type { Actor } from './actor';
import type { AuditRecord, AuditService } from './audit.service';

export interface FoldingSettings {
  /** Length of one window per source, code and key */
  windowMs: number;
  /** Rejections recorded one event each in a window; the rest are counted into one event */
  recordedPerWindow: number;
  /** Windows held at once: past this, every rejection is recorded on its own again */
  maxWindows: number;
}

export const DEFAULT_FOLDING: FoldingSettings = { windowMs: 60_000, recordedPerWindow: 100, maxWindows: 10_000 };

interface Window {
  startedAt: number;
  seen: number;
  folded: number;
  last: { actor: Actor; record: AuditRecord } | null;
}

/**
 * A rejected key is an auth.failure event, but anyone who can reach the port can present keys,
 * and the log is append-only. So per source address, code and key, the first rejections of a
 * window are recorded one event each; later ones are counted, and the window's count is written
 * as one more auth.failure event (details.repeats, with the window's bounds) when it closes.
 * Every rejection is still in the log, as itself or in a count; detectors hear each one as it
 * happens (AuditService.observe) and skip the count.
 */
export class AuthFailureFolding {
  private readonly windows = new Map<string, Window>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

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
    const key = `${actor.ip ?? ''}|${String(record.details?.code ?? '')}|${record.targetId ?? ''}`;
    let window = this.windows.get(key);
    if (window && now - window.startedAt >= this.settings.windowMs) {
      this.write(window);
      this.windows.delete(key);
      window = undefined;
    }
    if (!window) {
      if (this.windows.size >= this.settings.maxWindows) return true;
      window = { startedAt: now, seen: 0, folded: 0, last: null };
      this.windows.set(key, window);
    }
    window.seen++;
    if (window.seen <= this.settings.recordedPerWindow) return true;
    window.folded++;
    window.last = { actor, record };
    return false;
  }

  /** Writes the counts of closed windows (all of them with `all`, at shutdown). */
  flush(all: boolean, now = Date.now()): Promise<void> {
    for (const [key, window] of this.windows) {
      if (!all && now - window.startedAt < this.settings.windowMs) continue;
      this.windows.delete(key);
      this.write(window);
    }
    return this.flushing;
  }

  async close(): Promise<void> {
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
        windowStart: new Date(window.startedAt).toISOString(),
        windowSeconds: this.settings.windowMs / 1000,
      },
    };
    this.flushing = this.flushing.then(() => this.audit.recordAlone(actor, summary)).catch(this.onError);
  }
}
