import { DomainError } from './errors';

/** What one subscriber may keep waiting in memory before the oldest items are dropped. */
export const SUBSCRIBER_BUFFER = 1000;

interface Subscriber<T> {
  accepts(item: T): boolean;
  push(item: T): void;
}

/**
 * Fan-out to live subscriptions in this process. Each subscriber has its own bounded queue, so a
 * slow reader (its socket not draining) only loses its own oldest items; it never holds up the
 * others or grows memory without bound.
 */
export class LiveFeed<T> {
  private readonly subscribers = new Set<Subscriber<T>>();
  dropped = 0;

  /** `maxSubscribers`: more are refused (RATE_LIMITED), since every item costs the process once per subscriber. */
  constructor(private readonly limit: { name: string; maxSubscribers: number } = { name: 'subscriptions', maxSubscribers: Infinity }) {}

  get size(): number {
    return this.subscribers.size;
  }

  publish(item: T): void {
    for (const subscriber of this.subscribers) if (subscriber.accepts(item)) subscriber.push(item);
  }

  /**
   * An async iterator of the items `accepts` lets through, from now until the consumer stops, or
   * until `allowed` says the subscriber may no longer see them (its permission was taken away):
   * then the stream completes and nothing more is delivered.
   */
  subscribe(
    accepts: (item: T) => boolean,
    { limit = SUBSCRIBER_BUFFER, allowed = () => true }: { limit?: number; allowed?: () => boolean } = {},
  ): AsyncIterableIterator<T> {
    if (this.subscribers.size >= this.limit.maxSubscribers) {
      throw new DomainError('RATE_LIMITED', `At most ${this.limit.maxSubscribers} ${this.limit.name} may run at once on this server: retry later`);
    }
    const queue: T[] = [];
    let waiting: ((result: IteratorResult<T>) => void) | null = null;
    let done = false;
    const subscriber: Subscriber<T> = {
      accepts,
      push: (item) => {
        if (!allowed()) {
          void finish();
          return;
        }
        if (waiting) {
          const resolve = waiting;
          waiting = null;
          resolve({ value: item, done: false });
          return;
        }
        queue.push(item);
        if (queue.length > limit) {
          queue.shift();
          this.dropped++;
        }
      },
    };
    this.subscribers.add(subscriber);
    // Defined after `push` refers to it: push only runs once subscribe has returned.
    const finish = (): Promise<IteratorResult<T>> => {
      done = true;
      this.subscribers.delete(subscriber);
      queue.length = 0;
      if (waiting) waiting({ value: undefined, done: true });
      waiting = null;
      return Promise.resolve({ value: undefined, done: true });
    };
    return {
      next: () => {
        if (queue.length > 0) return Promise.resolve({ value: queue.shift()!, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (waiting = resolve));
      },
      return: finish,
      throw: (error: unknown) => {
        void finish();
        return Promise.reject(error);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
