import { Client } from 'pg';

const HEARTBEAT_MS = 5000;
const HEARTBEAT_TIMEOUT_MS = 3000;

export interface ListenerEvents {
  /** Connected and listening on every channel (first time and after each reconnect) */
  onUp?: () => void;
  /** The connection was lost: notifications sent meanwhile are gone */
  onDown?: (error: unknown) => void;
  /** A handler threw: anyone may NOTIFY a channel, and nothing a payload does may end the process */
  onHandlerError?: (error: unknown) => void;
}

/**
 * One dedicated PostgreSQL connection that LISTENs on named channels and reconnects with backoff.
 * NOTIFY is delivered only on commit, so a listener hears exactly the changes that happened.
 */
export class PgListener {
  private client: Client | null = null;
  private readonly handlers = new Map<string, Array<(payload: string) => void>>();
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  up = false;

  constructor(
    private readonly connectionString: string,
    private readonly events: ListenerEvents = {},
  ) {}

  on(channel: string, handler: (payload: string) => void): void {
    const list = this.handlers.get(channel) ?? [];
    list.push(handler);
    this.handlers.set(channel, list);
    if (this.client && this.up) void this.client.query(`LISTEN ${quoteIdent(channel)}`).catch(() => undefined);
  }

  /** Resolves once listening (or rejects when the first connection fails). */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new Client({ connectionString: this.connectionString, keepAlive: true, application_name: 'keyledger-listener' });
    client.on('notification', (message) => {
      for (const handler of this.handlers.get(message.channel) ?? []) {
        try {
          handler(message.payload ?? '');
        } catch (error) {
          this.events.onHandlerError?.(error);
        }
      }
    });
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('listener connection ended')));
    this.client = client;
    await client.connect();
    for (const channel of this.handlers.keys()) await client.query(`LISTEN ${quoteIdent(channel)}`);
    this.up = true;
    this.attempt = 0;
    this.startHeartbeat(client);
    this.events.onUp?.();
  }

  /**
   * A half-open TCP connection would leave us deaf without any error; a round trip every few
   * seconds notices within HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS and reconnects.
   */
  private startHeartbeat(client: Client): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (this.client !== client) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('listener heartbeat timed out')), HEARTBEAT_TIMEOUT_MS);
      });
      Promise.race([client.query('SELECT 1'), timeout])
        .catch((error: unknown) => this.lost(client, error))
        .finally(() => clearTimeout(timer));
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  private lost(client: Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = null;
    const wasUp = this.up;
    this.up = false;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    if (wasUp) this.events.onDown?.(error);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = Math.min(5000, 100 * 2 ** this.attempt++);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect().catch((error: unknown) => {
        const client = this.client;
        if (client) this.lost(client, error);
        else this.scheduleReconnect();
      });
    }, delay);
    this.retryTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = null;
    this.up = false;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }
}

function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}
