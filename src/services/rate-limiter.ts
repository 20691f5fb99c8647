import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/** A key's rate-limit setting and the window it counts in (a new id whenever the setting changes) */
export interface RateLimitWindow {
  id: string;
  limit: number;
  windowSeconds: number;
}

export interface RateLimitDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  resetAt: Date;
}

/**
 * Fixed-window limits per key (rate-limiter-flexible): `limit` verifications per `windowSeconds`,
 * the window starting at a key's first use. With Redis the windows are shared by every instance
 * (one atomic INCR per verification); while Redis is unreachable each instance falls back to its
 * own in-process window rather than refusing or waving through every call.
 * Counts are kept by window id, which changes with the setting: a changed setting starts a fresh
 * window, a setting the key had before included, and a rotation keeps the line's.
 */
export class KeyRateLimiter {
  private readonly limiters = new Map<string, RateLimiterAbstract>();

  constructor(private readonly redis: Redis | null = null) {}

  private limiter(limit: number, windowSeconds: number): RateLimiterAbstract {
    const id = `${limit}/${windowSeconds}`;
    let limiter = this.limiters.get(id);
    if (!limiter) {
      const memory = new RateLimiterMemory({ points: limit, duration: windowSeconds, keyPrefix: id });
      limiter = this.redis
        ? new RateLimiterRedis({
            storeClient: this.redis,
            points: limit,
            duration: windowSeconds,
            keyPrefix: `keyledger:rl:${id}`,
            insuranceLimiter: memory,
          })
        : memory;
      this.limiters.set(id, limiter);
    }
    return limiter;
  }

  async consume(window: RateLimitWindow): Promise<RateLimitDecision> {
    const { limit, windowSeconds } = window;
    try {
      const res = await this.limiter(limit, windowSeconds).consume(window.id, 1);
      return { allowed: true, limit, remaining: res.remainingPoints, resetAt: new Date(Date.now() + res.msBeforeNext) };
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      // The rejected attempt was counted too; take it back so only successes use the window.
      await this.refund(window);
      return { allowed: false, limit, remaining: 0, resetAt: new Date(Date.now() + rejection.msBeforeNext) };
    }
  }

  /** Gives a point back: a verification that failed after consuming must not count. */
  async refund(window: RateLimitWindow): Promise<void> {
    await this.limiter(window.limit, window.windowSeconds).reward(window.id, 1);
  }
}
