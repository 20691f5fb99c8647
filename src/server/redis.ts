import { Redis } from 'ioredis';
import { ConfigError } from '../config';

/**
 * The shared Redis, connected before the server serves: a configured but unreachable REDIS_URL
 * stops the start rather than running with limits that silently are not shared. Commands fail
 * fast while the connection is down (callers have in-process fallbacks) and it reconnects itself.
 */
export async function connectRedis(url: string, onError: (error: unknown) => void): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 5000 });
  let lastError: unknown = null;
  const remember = (error: unknown) => (lastError = error);
  redis.on('error', remember);
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    const cause = lastError ?? error;
    throw new ConfigError(`REDIS_URL: cannot connect to Redis (${cause instanceof Error ? cause.message : String(cause)})`);
  }
  redis.off('error', remember);
  redis.on('error', onError);
  return redis;
}
