import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { KeyRateLimiter, MAX_IN_PROCESS_WINDOWS, type RateLimitWindow } from '../src/services/rate-limiter';
import { redisForTests, sleep } from './helpers/cluster';

/**
 * The limiter under verifyKey, on its own: fixed windows that only successes use, memory bounded
 * whatever settings users create, windows shared through Redis under this deployment's prefix,
 * and each instance's own windows while Redis is away.
 */

const window = (limit: number, windowSeconds = 600): RateLimitWindow => ({ id: randomUUID(), limit, windowSeconds });

async function spend(limiter: KeyRateLimiter, w: RateLimitWindow, times: number) {
  const results = [];
  for (let i = 0; i < times; i++) results.push(await limiter.consume(w));
  return results;
}

describe('in-process windows', () => {
  test('limit 3: three allowed counting down, then refused at 0; refused attempts use nothing; a refund gives one back', async () => {
    const limiter = new KeyRateLimiter();
    const w = window(3);
    const results = await spend(limiter, w, 5);
    assert.deepEqual(results.map((r) => [r.allowed, r.remaining]), [[true, 2], [true, 1], [true, 0], [false, 0], [false, 0]]);
    assert.ok(results.every((r) => r.limit === 3));
    await limiter.refund(w, results[2]!);
    assert.deepEqual(await limiter.consume(w).then((r) => [r.allowed, r.remaining]), [true, 0]);
    assert.equal((await limiter.consume(window(3))).allowed, true, 'another window is its own');
  });

  test('a window ends windowSeconds after its first use and the next starts full', async () => {
    const limiter = new KeyRateLimiter();
    const w = window(1, 1);
    const first = await limiter.consume(w);
    assert.ok(Math.abs(first.resetAt.getTime() - (Date.now() + 1000)) < 250, first.resetAt.toISOString());
    assert.equal((await limiter.consume(w)).allowed, false);
    await sleep(1100);
    assert.equal((await limiter.consume(w)).allowed, true);
  });

  test(`memory stays bounded: ${MAX_IN_PROCESS_WINDOWS + 20_000} windows of distinct settings keep at most ${MAX_IN_PROCESS_WINDOWS}`, async () => {
    const limiter = new KeyRateLimiter();
    for (let i = 0; i < MAX_IN_PROCESS_WINDOWS + 20_000; i++) await limiter.consume(window(1 + (i % 5000), 60 + (i % 3600)));
    assert.equal(limiter.inProcessWindows, MAX_IN_PROCESS_WINDOWS);
  });

  test('the most recently used windows are the ones kept', async () => {
    const limiter = new KeyRateLimiter(null, undefined, 100);
    const busy = window(2);
    await limiter.consume(busy);
    for (let i = 0; i < 500; i++) {
      await limiter.consume(window(5));
      if (i % 50 === 0) await limiter.consume(busy).then((taken) => limiter.refund(busy, taken));
    }
    assert.equal(limiter.inProcessWindows, 100);
    assert.deepEqual(await spend(limiter, busy, 2).then((rs) => rs.map((r) => r.allowed)), [true, false], 'the busy window kept its count');
  });
});

/** A point taken in one window and given back once the next has begun: the next keeps its limit. */
async function expectLateRefundIgnored(limiter: KeyRateLimiter): Promise<void> {
  const w = window(2, 1);
  const taken = await limiter.consume(w);
  await sleep(1100);
  assert.equal((await limiter.consume(w)).allowed, true, 'a new window');
  await limiter.refund(w, taken);
  assert.deepEqual(await spend(limiter, w, 2).then((rs) => rs.map((r) => r.allowed)), [true, false], 'limit 2 in the new window, refund or not');
}

test('in-process: a refund after its window ended gives nothing to the next', () => expectLateRefundIgnored(new KeyRateLimiter()));

const redis = redisForTests();

describe('windows in Redis', { skip: redis.skip }, () => {
  const clients: Redis[] = [];
  const connect = () => {
    const client = new Redis(redis.url!, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true });
    clients.push(client);
    return client.connect().then(() => client);
  };
  const prefix = `keyledger:test-${randomUUID()}:rl:`;
  after(async () => {
    const [first] = clients;
    if (first) {
      const keys = await first.keys(`${prefix}*`);
      if (keys.length) await first.del(...keys);
    }
    for (const client of clients) client.disconnect();
  });

  test('two instances share one window under the deployment prefix, expiring with it; refused attempts and refunds count as in-process', async () => {
    const [a, b] = [new KeyRateLimiter(await connect(), prefix), new KeyRateLimiter(await connect(), prefix)];
    const w = window(3, 30);
    const answers = [await a.consume(w), await b.consume(w), await a.consume(w), await b.consume(w), await a.consume(w)];
    assert.deepEqual(answers.map((r) => [r.allowed, r.remaining]), [[true, 2], [true, 1], [true, 0], [false, 0], [false, 0]]);
    assert.equal(a.inProcessWindows + b.inProcessWindows, 0, 'nothing counted in-process while Redis answers');
    const store = clients[0]!;
    assert.equal(await store.get(`${prefix}${w.id}`), '3');
    const ttl = await store.pttl(`${prefix}${w.id}`);
    assert.ok(ttl > 28_000 && ttl <= 30_000, String(ttl));
    assert.ok(Math.abs(answers[4]!.resetAt.getTime() - (Date.now() + ttl)) < 1000);
    await b.refund(w, answers[1]!);
    assert.deepEqual([(await a.consume(w)).allowed, (await b.consume(w)).allowed], [true, false]);
  });

  test('a refund after its window ended gives nothing to the next', async () => expectLateRefundIgnored(new KeyRateLimiter(await connect(), prefix)));

  test('another deployment on the same Redis has its own windows', async () => {
    const client = await connect();
    const ours = new KeyRateLimiter(client, prefix);
    const theirPrefix = `keyledger:test-${randomUUID()}:rl:`;
    const theirs = new KeyRateLimiter(client, theirPrefix);
    const w = window(1);
    assert.equal((await ours.consume(w)).allowed, true);
    assert.equal((await theirs.consume(w)).allowed, true);
    assert.equal((await ours.consume(w)).allowed, false);
    await client.del(`${theirPrefix}${w.id}`);
  });
});

test('Redis unreachable: each instance counts in its own windows, neither refusing nor waving everything through', async () => {
  // A port nothing listens on; commands fail at once (no offline queue), as the server's client is set up.
  const gone = new Redis('redis://127.0.0.1:1', { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true, retryStrategy: () => null });
  gone.on('error', () => {});
  try {
    const limiter = new KeyRateLimiter(gone, 'keyledger:gone:rl:');
    const w = window(2);
    const spent = await spend(limiter, w, 3);
    assert.deepEqual(spent.map((r) => r.allowed), [true, true, false]);
    assert.equal(limiter.inProcessWindows, 1);
    await limiter.refund(w, spent[1]!);
    assert.equal((await limiter.consume(w)).allowed, true, 'the refund found the in-process window');
  } finally {
    gone.disconnect();
  }
});
