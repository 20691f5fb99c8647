import type { Redis } from 'ioredis';
import { notifyStatement } from './sql-literal';
import type { PgListener } from './pg-listener';

/**
 * Fan-out of committed events (new alerts, sealed audit ranges) to every instance. A producer
 * runs `statement` inside its transaction and calls `committed` once it has committed; each transport
 * acts at the point it can keep its promise: PostgreSQL's NOTIFY rides on the commit itself,
 * Redis publishes after it.
 */
export interface EventBus {
  /** SQL to run inside the transaction that makes the event (NOTIFY), or null to publish only after it commits */
  statement(channel: string, payload: string): string | null;
  committed(channel: string, payload: string): void;
  /** A notice that belongs to no transaction, sent now */
  publish(channel: string, payload: string): Promise<void>;
  subscribe(channel: string, handler: (payload: string) => void): void;
  /** Resolves once every subscription is in place (events published before then are not heard). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** LISTEN/NOTIFY: delivered only if the transaction commits, in commit order. */
export class PgEventBus implements EventBus {
  constructor(
    private readonly listener: PgListener,
    private readonly run: (statement: string) => Promise<unknown>,
  ) {}

  statement(channel: string, payload: string): string {
    return notifyStatement(channel, payload);
  }

  committed(): void {}

  async publish(channel: string, payload: string): Promise<void> {
    await this.run(notifyStatement(channel, payload));
  }

  subscribe(channel: string, handler: (payload: string) => void): void {
    this.listener.on(channel, handler);
  }

  async ready(): Promise<void> {}

  async close(): Promise<void> {}
}

/**
 * Redis pub/sub (REDIS_URL): published after the commit, so a subscriber never hears of something
 * that rolled back; a crash between commit and publish loses that live notice (the alert or event
 * itself is stored). One extra connection subscribes; ioredis re-subscribes after a reconnect.
 * Channels carry the deployment's id: pub/sub ignores Redis's database number, and deployments
 * sharing one Redis must not hear each other's alerts.
 */
export class RedisEventBus implements EventBus {
  private readonly subscriber: Redis;
  private readonly handlers = new Map<string, Array<(payload: string) => void>>();
  private readonly subscribed: Array<Promise<unknown>> = [];

  constructor(
    private readonly redis: Redis,
    private readonly onError: (error: unknown) => void,
    private readonly deploymentId: string,
  ) {
    this.subscriber = redis.duplicate({ enableOfflineQueue: true });
    this.subscriber.on('error', onError);
    this.subscriber.on('message', (channel: string, payload: string) => {
      for (const handler of this.handlers.get(channel) ?? []) {
        // Anyone who may publish on this Redis reaches here: nothing a payload does may end the process.
        try {
          handler(payload);
        } catch (error) {
          onError(error);
        }
      }
    });
  }

  private named(channel: string): string {
    return `keyledger:${this.deploymentId}:${channel}`;
  }

  statement(): null {
    return null;
  }

  committed(channel: string, payload: string): void {
    this.publish(channel, payload).catch(this.onError);
  }

  async publish(channel: string, payload: string): Promise<void> {
    await this.redis.publish(this.named(channel), payload);
  }

  subscribe(channel: string, handler: (payload: string) => void): void {
    const named = this.named(channel);
    const list = this.handlers.get(named) ?? [];
    list.push(handler);
    this.handlers.set(named, list);
    if (list.length === 1) this.subscribed.push(this.subscriber.subscribe(named));
  }

  async ready(): Promise<void> {
    await Promise.all(this.subscribed);
  }

  async close(): Promise<void> {
    this.subscriber.disconnect();
  }
}
