import { DomainError } from './errors';

/** What one subscriber may keep waiting in memory before the oldest items are dropped. */
export const SUBSCRIBER_BUFFER = 1000;

interface Subscriber<T> {
  accepts(item: T): boolean;
  push(item: T): void;
}

export interface FeedLimit {
  /** What the subscriptions are called in a refusal */
  name: string;
  maxSubscribers: number;
  /** Of those, how many one owner (a user) may hold */
  maxPerOwner: number;
}

/**
 * Fan-out to live subscriptions in this process. Each subscriber has its own bounded queue, so a
 * slow reader (its socket not draining) only loses its own oldest items; it never holds up the
 * others or grows memory without bound.
 */
export class LiveFeed<T> {
  private readonly subscribers = new Set<Subscriber<T>>();
  private readonly perOwner = new Map<string, number>();
  dropped = 0;
  /** Subscriptions refused for the limit */
  refused = 0;

  /** More than the limit are refused (RATE_LIMITED): every item costs the process once per subscriber. */
  constructor(private readonly limit: FeedLimit = { name: 'subscriptions', maxSubscribers: Infinity, maxPerOwner: Infinity }) {}

  private refusal(owner: string | undefined): string | null {
    const { name, maxSubscribers, maxPerOwner } = this.limit;
    if (maxSubscribers === 0) return `${name[0]!.toUpperCase()}${name.slice(1)} are turned off on this server`;
    if (this.subscribers.size >= maxSubscribers) return `At most ${maxSubscribers} ${name} may run at once on this server: retry later`;
    if (owner !== undefined && (this.perOwner.get(owner) ?? 0) >= maxPerOwner) return `At most ${maxPerOwner} ${name} may run at once for one user on this server: end one first`;
    return null;
  }

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
    { limit = SUBSCRIBER_BUFFER, allowed = () => true, owner }: { limit?: number; allowed?: () => boolean; owner?: string } = {},
  ): AsyncIterableIterator<T> {
    const refusal = this.refusal(owner);
    if (refusal) {
      this.refused++;
      throw new DomainError('RATE_LIMITED', refusal);
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
    if (owner !== undefined) this.perOwner.set(owner, (this.perOwner.get(owner) ?? 0) + 1);
    // Defined after `push` refers to it: push only runs once subscribe has returned.
    const finish = (): Promise<IteratorResult<T>> => {
      if (!done && owner !== undefined) {
        const left = this.perOwner.get(owner)! - 1;
        if (left > 0) this.perOwner.set(owner, left);
        else this.perOwner.delete(owner);
      }
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
