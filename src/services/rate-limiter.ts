import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';

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

/** In-process windows kept at once: bounds memory whatever settings and keys users create. */
export const MAX_IN_PROCESS_WINDOWS = 100_000;

interface WindowCount {
  used: number;
  endsAt: number;
}

/**
 * One atomic step in Redis: count the attempt, start the window's clock on its first, and take a
 * refused attempt straight back so only successes use the window. Returns [used or -1, ms left].
 */
const CONSUME_SCRIPT = `
local used = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
if used > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {-1, left}
end
return {used, left}`;

const REFUND_SCRIPT = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then redis.call('DECR', KEYS[1]) end
return 0`;

type ScriptedRedis = Redis & {
  keyledgerRateConsume(key: string, limit: number, windowMs: number): Promise<[number, number]>;
  keyledgerRateRefund(key: string): Promise<number>;
};

/**
 * Fixed-window limits per key: `limit` verifications per `windowSeconds`, the window starting at
 * its first use. Counts are kept by window id, which changes with the setting: a changed setting
 * starts a fresh window, a setting the key had before included, and a rotation keeps the line's.
 * With Redis every instance shares each window (one script call a verification); while Redis is
 * unreachable each instance counts in its own windows rather than refusing or waving everything
 * through. In-process windows live in one LRU, so memory stays bounded; an evicted window (the
 * least recently used of MAX_IN_PROCESS_WINDOWS) starts afresh.
 */
export class KeyRateLimiter {
  private readonly windows: LRUCache<string, WindowCount>;
  private readonly redis: ScriptedRedis | null;

  /** `redisKeyPrefix` scopes the shared windows to one deployment (`keyledger:<deployment>:rl:`). */
  constructor(
    redis: Redis | null = null,
    private readonly redisKeyPrefix = 'keyledger:rl:',
    maxInProcessWindows = MAX_IN_PROCESS_WINDOWS,
  ) {
    this.windows = new LRUCache({ max: maxInProcessWindows });
    this.redis = redis ? withScripts(redis) : null;
  }

  /** In-process windows held now (what the bound is tested by) */
  get inProcessWindows(): number {
    return this.windows.size;
  }

  async consume(window: RateLimitWindow): Promise<RateLimitDecision> {
    if (this.redis) {
      try {
        const [used, msLeft] = await this.redis.keyledgerRateConsume(this.redisKey(window), window.limit, window.windowSeconds * 1000);
        return decision(window, used < 0 ? null : used, Date.now() + msLeft);
      } catch {
        // Redis unreachable: fall through to this instance's own window.
      }
    }
    return this.consumeInProcess(window);
  }

  /**
   * Gives back the point `taken` took: a verification that failed after consuming must not count.
   * Only while that window lasts: a failure that comes after it (a long wait on a lock, an outage)
   * must not hand the next window an extra verification.
   */
  async refund(window: RateLimitWindow, taken: RateLimitDecision): Promise<void> {
    if (Date.now() >= taken.resetAt.getTime()) return;
    if (this.redis) {
      try {
        await this.redis.keyledgerRateRefund(this.redisKey(window));
        return;
      } catch {
        // Taken in-process while Redis was away, most likely: give it back there.
      }
    }
    const count = this.windows.peek(window.id);
    if (count && count.used > 0 && count.endsAt === taken.resetAt.getTime()) count.used--;
  }

  private consumeInProcess(window: RateLimitWindow): RateLimitDecision {
    const now = Date.now();
    let count = this.windows.get(window.id);
    if (!count || count.endsAt <= now) {
      count = { used: 0, endsAt: now + window.windowSeconds * 1000 };
      this.windows.set(window.id, count);
    }
    if (count.used >= window.limit) return decision(window, null, count.endsAt);
    count.used++;
    return decision(window, count.used, count.endsAt);
  }

  private redisKey(window: RateLimitWindow): string {
    return `${this.redisKeyPrefix}${window.id}`;
  }
}

/** `used` null: refused, the window full. */
function decision(window: RateLimitWindow, used: number | null, endsAt: number): RateLimitDecision {
  const allowed = used !== null;
  return { allowed, limit: window.limit, remaining: allowed ? Math.max(0, window.limit - used) : 0, resetAt: new Date(endsAt) };
}

function withScripts(redis: Redis): ScriptedRedis {
  const scripted = redis as ScriptedRedis;
  if (typeof scripted.keyledgerRateConsume !== 'function') {
    redis.defineCommand('keyledgerRateConsume', { numberOfKeys: 1, lua: CONSUME_SCRIPT });
    redis.defineCommand('keyledgerRateRefund', { numberOfKeys: 1, lua: REFUND_SCRIPT });
  }
  return scripted;
}
