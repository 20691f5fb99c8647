import { LRUCache } from 'lru-cache';
import type { AlertService, AlertSignal } from './alert.service';

interface OpenAlert {
  until: number;
  pending: number;
  signal: AlertSignal;
}

const REPEAT_FLUSH_MS = 1000;

/**
 * Between the detectors (called on the verification hot path) and the database: the first signal
 * of a (type, subject) is queued to be raised; the following ones inside its window are only
 * counted here and added to the open alert's repeats once a second. The queue is bounded: past
 * it, signals are dropped and counted rather than growing memory.
 */
export class AlertSink {
  private readonly open = new LRUCache<string, OpenAlert>({ max: 50_000 });
  private readonly queue: Array<{ signal: AlertSignal; occurrences: number }> = [];
  private running = 0;
  private readonly drained: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  dropped = 0;

  constructor(
    private readonly alerts: AlertService,
    private readonly onError: (error: unknown) => void,
    private readonly maxQueued = 10_000,
    private readonly concurrency = 4,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flushRepeats().catch(this.onError), REPEAT_FLUSH_MS);
    this.timer.unref();
  }

  emit(signal: AlertSignal): void {
    const id = `${signal.type}:${signal.subject}`;
    const now = Date.now();
    const open = this.open.get(id);
    if (open && open.until > now) {
      open.pending++;
      return;
    }
    this.enqueue(signal, 1);
  }

  private enqueue(signal: AlertSignal, occurrences: number): void {
    if (this.queue.length >= this.maxQueued) {
      this.dropped += occurrences;
      return;
    }
    const id = `${signal.type}:${signal.subject}`;
    // Occurrences counted on the entry this one replaces (while a flush was finding no alert to
    // add them to) move over, to be added to the alert this raise opens or finds.
    const carried = this.open.get(id)?.pending ?? 0;
    this.open.set(id, { until: Date.now() + signal.windowSeconds * 1000, pending: carried, signal });
    this.queue.push({ signal, occurrences });
    this.pump();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const { signal, occurrences } = this.queue.shift()!;
      this.running++;
      this.alerts
        .raise(signal, occurrences)
        .catch((error: unknown) => {
          this.open.delete(`${signal.type}:${signal.subject}`);
          this.onError(error);
        })
        .finally(() => {
          this.running--;
          this.pump();
          if (this.running === 0 && this.queue.length === 0) this.drained.splice(0).forEach((resolve) => resolve());
        });
    }
  }

  /**
   * Adds counted repeats to their open alerts. When there is none (resolved meanwhile, its window
   * passed, or its raise has not committed yet), the occurrences go through raise(), which under
   * its lock either folds them into the alert it finds or opens a new one: none is lost.
   */
  async flushRepeats(): Promise<void> {
    for (const open of [...this.open.values()]) {
      if (open.pending === 0) continue;
      const repeats = open.pending;
      open.pending = 0;
      const updated = await this.alerts.addRepeats(null, open.signal.type, open.signal.subject, repeats);
      if (updated === 0) this.enqueue(open.signal, repeats);
    }
  }

  /** The alert for this type and subject was resolved here: its next occurrence is a new alert at once. */
  forget(type: string, subject: string): void {
    this.open.delete(`${type}:${subject}`);
  }

  /** Resolves once every queued signal has been raised. */
  idle(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.idle();
    await this.flushRepeats().catch(this.onError);
  }
}
