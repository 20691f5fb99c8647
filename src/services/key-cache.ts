import { LRUCache } from 'lru-cache';

/** What can change a verification result, as announced by the change that did it. */
export type Invalidation = { kind: 'key'; id: string } | { kind: 'user'; id: string } | { kind: 'all' };

export interface CachedKey {
  id: string;
  ownerId: string;
  /** The service account owner's responsible human, whose status also decides */
  ownerOwnerId: string | null;
  /** The key whose quota this one draws on (its newest successor during a rotation grace) */
  quotaId?: string;
}

export interface KeyCacheOptions {
  maxEntries: number;
  maxMisses?: number;
  /** Defence in depth only: invalidation is what keeps entries right */
  ttlMs?: number;
  missTtlMs?: number;
}

/**
 * Key records by key hash, so a known key in steady state verifies without PostgreSQL, and a
 * bounded negative cache for well-formed keys that do not exist.
 *
 * Correctness rests on invalidation: the change feed drops entries on every instance. A lookup
 * that was in flight when an invalidation arrived may have read the row before the change
 * committed, so each invalidation bumps an epoch and a lookup only caches what it read if no
 * epoch passed meanwhile. While the feed is down the cache is empty and off.
 */
export class KeyCache<R extends CachedKey> {
  private readonly records: LRUCache<string, R>;
  private readonly misses: LRUCache<string, true>;
  private readonly hashByKeyId = new Map<string, string>();
  private readonly hashesByUserId = new Map<string, Set<string>>();
  /** Records drawing on another key's quota, by that key: a change to it (its own rotation) changes them */
  private readonly hashesByQuotaKey = new Map<string, Set<string>>();
  private epoch = 0;
  private live = false;
  readonly stats = { hits: 0, misses: 0, negativeHits: 0, invalidations: 0 };

  constructor(private readonly options: KeyCacheOptions) {
    this.records = new LRUCache<string, R>({
      max: Math.max(1, options.maxEntries),
      ttl: options.ttlMs ?? 10 * 60_000,
      dispose: (record, hash) => this.unindex(record, hash),
    });
    this.misses = new LRUCache<string, true>({
      max: Math.max(1, options.maxMisses ?? 10_000),
      ttl: options.missTtlMs ?? 60_000,
    });
  }

  get enabled(): boolean {
    return this.live && this.options.maxEntries > 0;
  }

  get size(): number {
    return this.records.size;
  }

  /** The feed is up: start caching from empty. */
  goLive(): void {
    this.clear();
    this.live = true;
  }

  /** The feed is down: invalidations may be missed, so nothing cached can be trusted. */
  goDark(): void {
    this.live = false;
    this.clear();
  }

  /** A cached record (a hit), else undefined: asked before anything else about a presented key. */
  known(hash: string): R | undefined {
    if (!this.enabled) return undefined;
    const record = this.records.get(hash);
    if (record !== undefined) this.stats.hits++;
    return record;
  }

  /** A record, null for a known miss, undefined when the database must be asked. */
  get(hash: string): R | null | undefined {
    if (!this.enabled) return undefined;
    const record = this.records.get(hash);
    if (record !== undefined) {
      this.stats.hits++;
      return record;
    }
    if (this.misses.get(hash)) {
      this.stats.negativeHits++;
      return null;
    }
    this.stats.misses++;
    return undefined;
  }

  /** As get(), without counting: for looking ahead at a key that is about to be verified. */
  peek(hash: string): R | null | undefined {
    if (!this.enabled) return undefined;
    return this.records.peek(hash) ?? (this.misses.peek(hash) ? null : undefined);
  }

  /** The cached records counting against `quotaId`'s quota: the key itself and its rotated predecessors. */
  onQuota(quotaId: string): R[] {
    const hashes = [this.hashByKeyId.get(quotaId), ...(this.hashesByQuotaKey.get(quotaId) ?? [])];
    return hashes.flatMap((hash) => {
      const record = hash === undefined ? undefined : this.records.peek(hash);
      return record === undefined ? [] : [record];
    });
  }

  /** Taken before a lookup; `put` ignores a result read across an invalidation. */
  ticket(): number {
    return this.epoch;
  }

  put(hash: string, record: R | null, ticket: number): void {
    if (!this.enabled || ticket !== this.epoch) return;
    if (record === null) {
      this.misses.set(hash, true);
      return;
    }
    this.records.set(hash, record);
    this.hashByKeyId.set(record.id, hash);
    for (const userId of [record.ownerId, record.ownerOwnerId]) {
      if (userId !== null) indexUnder(this.hashesByUserId, userId, hash);
    }
    if (record.quotaId !== undefined && record.quotaId !== record.id) indexUnder(this.hashesByQuotaKey, record.quotaId, hash);
  }

  invalidate(change: Invalidation): void {
    this.epoch++;
    this.stats.invalidations++;
    switch (change.kind) {
      case 'key': {
        // A new key may carry a hash that was looked up before it existed.
        this.misses.clear();
        const hash = this.hashByKeyId.get(change.id);
        if (hash !== undefined) this.records.delete(hash);
        for (const dependent of [...(this.hashesByQuotaKey.get(change.id) ?? [])]) this.records.delete(dependent);
        return;
      }
      case 'user':
        for (const hash of [...(this.hashesByUserId.get(change.id) ?? [])]) this.records.delete(hash);
        return;
      case 'all':
        this.clear();
        return;
    }
  }

  private clear(): void {
    this.epoch++;
    this.records.clear();
    this.misses.clear();
  }

  private unindex(record: R, hash: string): void {
    if (this.hashByKeyId.get(record.id) === hash) this.hashByKeyId.delete(record.id);
    for (const userId of [record.ownerId, record.ownerOwnerId]) {
      if (userId !== null) unindexUnder(this.hashesByUserId, userId, hash);
    }
    if (record.quotaId !== undefined) unindexUnder(this.hashesByQuotaKey, record.quotaId, hash);
  }
}

function indexUnder(index: Map<string, Set<string>>, id: string, hash: string): void {
  let hashes = index.get(id);
  if (!hashes) index.set(id, (hashes = new Set()));
  hashes.add(hash);
}

function unindexUnder(index: Map<string, Set<string>>, id: string, hash: string): void {
  const hashes = index.get(id);
  hashes?.delete(hash);
  if (hashes?.size === 0) index.delete(id);
}
