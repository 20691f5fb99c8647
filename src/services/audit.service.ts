import { createHash } from 'node:crypto';
import type { PoolClient, QueryResult } from 'pg';
import type { DataSource, EntityManager, QueryRunner } from 'typeorm';
import { AuditEventEntity } from '../entities';
import { ActorType, AuditOutcome } from '../entities/enums';
import { quoteInput, redactKeys } from '../auth/key-format';
import type { Actor } from './actor';
import { isTransientConflict } from './errors';
import { canonicalJson } from './canonical-json';
import { rollupStatement } from './audit-rollup';
import { sqlLiteral } from './sql-literal';
import type { EventBus } from './event-bus';
import { shiftParameters, type ReadPlan, type SqlPart } from './read-plan';
import { ADVISORY_LOCKS } from '../db/advisory-locks';

export interface AuditRecord {
  action: string;
  outcome?: AuditOutcome;
  targetType?: string | null;
  targetId?: string | null;
  details?: Record<string, unknown> | null;
}

/** Something that must follow every audited change: told inside its transaction and after it commits. */
export interface ChangeHook {
  staged(tx: EntityManager, record: AuditRecord): Promise<void>;
  committed(record: AuditRecord, actor: Actor): void;
}

export const GENESIS_HASH = '0'.repeat(64);
const MAX_TRANSACTION_ATTEMPTS = 4;
/** Before another attempt, a random wait up to this times 2^attempt: racers that met once part ways. */
const RETRY_JITTER_MS = 10;
/** One sealer at a time, across every instance, so the chain never forks. */
export const CHAIN_LOCK = ADVISORY_LOCKS.auditChain;

/** Every string, at any depth, without NUL (jsonb refuses it) and with anything key-shaped blanked. */
function scrubStrings(value: unknown): unknown {
  if (typeof value === 'string') return redactKeys(value.replace(/\u0000/g, ''));
  if (Array.isArray(value)) return value.map(scrubStrings);
  if (value instanceof Date) return value.toISOString();
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [scrubStrings(k) as string, scrubStrings(v)]));
  }
  return value;
}

export function scrubSecrets(details: Record<string, unknown> | null | undefined): Record<string, unknown> | null {
  if (!details) return null;
  // Round-trip through JSON so what is hashed later is exactly what jsonb stores.
  return JSON.parse(scrubbedJson(details)!) as Record<string, unknown>;
}

/** The details as JSON text, scrubbed: what staging stores, without a round trip through objects. */
function scrubbedJson(details: Record<string, unknown> | null | undefined): string | null {
  return details ? JSON.stringify(scrubStrings(details)) : null;
}

/** An event's fields with the contract's names, as hashed and as exported (without the chain links). */
export function auditEventBody(event: Omit<AuditEventEntity, 'hash' | 'prevHash'>): Record<string, unknown> {
  return {
    id: event.id,
    occurredAt: event.occurredAt.toISOString(),
    action: event.action,
    outcome: event.outcome,
    actorType: event.actorType,
    actorId: event.actorId,
    actorKeyId: event.actorKeyId,
    targetType: event.targetType,
    targetId: event.targetId,
    ip: event.ip,
    userAgent: event.userAgent,
    requestId: event.requestId,
    details: event.details,
  };
}

/** sha256 over the previous event's hash and this event's body in a fixed canonical serialisation. */
export function eventHash(event: Omit<AuditEventEntity, 'hash'>): string {
  return createHash('sha256').update(event.prevHash).update('\n').update(canonicalJson(auditEventBody(event))).digest('hex');
}

interface StagedRow {
  id: string;
  occurred_at: Date;
  action: string;
  outcome: AuditOutcome;
  actor_type: ActorType;
  actor_id: string | null;
  actor_key_id: string | null;
  target_type: string | null;
  target_id: string | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  details: Record<string, unknown> | null;
}

const STAGING_COLUMNS = `occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type, target_id, ip,
                         user_agent, request_id, details`;

/** One event's staging values as literals, in STAGING_COLUMNS order. */
function stagingValues(actor: Actor, record: AuditRecord): string[] {
  return [
    `${sqlLiteral(new Date().toISOString())}::timestamptz`,
    sqlLiteral(record.action),
    sqlLiteral(record.outcome ?? AuditOutcome.SUCCESS),
    sqlLiteral(actor.type),
    `${sqlLiteral(actor.userId)}::uuid`,
    `${sqlLiteral(actor.keyId)}::uuid`,
    sqlLiteral(record.targetType ?? null),
    sqlLiteral(record.targetId ?? null),
    sqlLiteral(actor.ip),
    // A client may put anything in its User-Agent, a key included: blanked like every other text.
    sqlLiteral(actor.userAgent ? quoteInput(actor.userAgent, 512) : null),
    sqlLiteral(actor.requestId),
    `${sqlLiteral(scrubbedJson(record.details))}::jsonb`,
  ];
}

/** The INSERT that stages one event, all literals: it can ride inside another statement, there only `when` a condition holds. */
function stagingInsert(actor: Actor, record: AuditRecord, when = 'true'): string {
  return `INSERT INTO audit_staging (${STAGING_COLUMNS}) SELECT ${stagingValues(actor, record).join(', ')} WHERE ${when}`;
}

/**
 * The staging INSERT prepared once on each connection: a change's COMMIT then carries only an
 * EXECUTE with the event's values, and PostgreSQL neither parses nor plans the INSERT again.
 * PREPARE outlives a rolled-back transaction, so a connection that prepared it keeps it. The name
 * carries a digest of the definition: a release that changes it never EXECUTEs another's.
 */
const STAGE_EVENT_DEFINITION = `(timestamptz, text, text, text, uuid, uuid, text, text, text, text, text, jsonb) AS
  INSERT INTO audit_staging (${STAGING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`;
const STAGE_EVENT = `keyledger_stage_event_${createHash('sha256').update(STAGE_EVENT_DEFINITION).digest('hex').slice(0, 12)}`;
const PREPARE_STAGE_EVENT = `PREPARE ${STAGE_EVENT} ${STAGE_EVENT_DEFINITION}`;
const preparedConnections = new WeakSet<object>();
/**
 * Data sources whose prepared statement was once missing where it was prepared, or present where
 * it was not: a pooler between here and PostgreSQL (PgBouncer in transaction mode) hands each
 * transaction another server connection. They stage events as literals from then on.
 */
const literalStaging = new WeakSet<DataSource>();
/** SQLSTATE 26000 (no such prepared statement) and 42P05 (one of that name exists already) */
const PREPARED_STATEMENT_MISMATCH = new Set(['26000', '42P05']);

function isPreparedStatementMismatch(error: unknown): boolean {
  const pgError = (error as { driverError?: { code?: string }; code?: string }) ?? {};
  return PREPARED_STATEMENT_MISMATCH.has(pgError.driverError?.code ?? pgError.code ?? '');
}

/**
 * Statements a transaction opened by AuditService.transaction() sends together with its COMMIT:
 * its audit events and notifications then cost no round trip of their own.
 */
interface CommitTail {
  statements: string[];
  /** true once a statement EXECUTEs STAGE_EVENT: the connection must have it prepared */
  stagesEvents: boolean;
}
const commitTails = new WeakMap<EntityManager, CommitTail>();

/** Runs `statement` (literals only, no parameters) with the transaction's COMMIT, or now when it has no tail. */
export async function withCommit(tx: EntityManager, statement: string): Promise<void> {
  const tail = commitTails.get(tx);
  if (tail) tail.statements.push(statement);
  else await tx.query(statement);
}

/** Stages an event with the transaction's COMMIT (prepared), or now when it has no tail. */
async function stageEvent(tx: EntityManager, actor: Actor, record: AuditRecord): Promise<void> {
  const tail = commitTails.get(tx);
  if (!tail) return void (await tx.query(stagingInsert(actor, record)));
  if (literalStaging.has(tx.connection)) return void tail.statements.push(stagingInsert(actor, record));
  tail.statements.push(`EXECUTE ${STAGE_EVENT}(${stagingValues(actor, record).join(', ')})`);
  tail.stagesEvents = true;
}

export interface TransactionOptions {
  /** true: answer only once the events are sealed into the chain (default: once committed) */
  waitForSeal?: boolean;
}

/**
 * A query runner whose COMMIT carries the transaction's tail, and whose BEGIN waits for the first
 * statement: a transaction that only records an event is then one round trip, not three.
 */
function deferringRunner(runner: QueryRunner, tail: CommitTail, effects: Array<() => void>): QueryRunner {
  const query = runner.query.bind(runner) as (sql: string, ...rest: unknown[]) => Promise<unknown>;
  const { statements } = tail;
  let beginPending = false;
  // Tail and effects at each open savepoint: a rolled-back savepoint takes its statements and effects with it.
  const savepoints: Array<{ tail: number; effects: number }> = [];
  // Its own round trip, once per connection, so whether it succeeded is never in doubt.
  const prepareStaging = async () => {
    const connection = (await runner.connect()) as object;
    if (preparedConnections.has(connection)) return;
    await query(PREPARE_STAGE_EVENT);
    preparedConnections.add(connection);
  };
  /** The tail and COMMIT in one round trip, opening the transaction too when BEGIN is still pending */
  const commitWithTail = async (begin: boolean) => {
    if (tail.stagesEvents) await prepareStaging();
    return query(`${begin ? 'START TRANSACTION;\n' : ''}${statements.join(';\n')};\nCOMMIT`);
  };
  runner.query = (async (sql: string, ...rest: unknown[]) => {
    if (sql.startsWith('SAVEPOINT ')) savepoints.push({ tail: statements.length, effects: effects.length });
    else if (sql.startsWith('RELEASE SAVEPOINT ')) savepoints.pop();
    else if (sql.startsWith('ROLLBACK TO SAVEPOINT ')) {
      const mark = savepoints.pop();
      if (mark) {
        statements.length = mark.tail;
        effects.length = mark.effects;
      }
    }
    if (sql === 'START TRANSACTION') {
      beginPending = true;
      return undefined;
    }
    if (beginPending && (sql === 'COMMIT' || sql === 'ROLLBACK')) {
      beginPending = false;
      if (sql === 'ROLLBACK' || statements.length === 0) return undefined; // nothing was sent
      return commitWithTail(true);
    }
    if (beginPending) {
      beginPending = false;
      await query('START TRANSACTION');
    }
    return sql === 'COMMIT' && statements.length > 0 ? commitWithTail(false) : query(sql, ...rest);
  }) as typeof runner.query;
  return runner;
}

export const SEAL_BATCH = 5000;
/** Seal passes an audited read waits for before it gives up on events it saw staged */
const MAX_RESEALS = 3;
/**
 * How long a committed event may stay unsealed when no reader asks for it: commits meanwhile share
 * one pass, whose fixed cost (lock, head, rollups, a commit) is then spread over more events. Only
 * live audit tails wait this long; every reader seals first.
 */
const UNAWAITED_SEAL_DELAY_MS = 50;
/** Announces each sealed range of ids, on commit, to every instance (live audit tails) */
export const AUDIT_SEALED_CHANNEL = 'keyledger_audit_sealed';

/**
 * Writes audit events with each change and seals them into the hash chain.
 *
 * A change's transaction inserts its event into audit_staging without any lock, so concurrent
 * writers never wait on each other's commit. Sealing moves staged events into audit_events in
 * staging order under one advisory lock (one sealer at a time across all instances), giving each
 * its public id and its hash over the previous event's hash: one commit seals a whole batch.
 * A change answers once its event is committed; the seal follows within UNAWAITED_SEAL_DELAY_MS,
 * or at once when a reader on any instance could see the event (settled()), so nobody reads the
 * log without it. A background pass seals anything left behind by a crash.
 */
export class AuditService {
  private waiting: Array<() => void> = [];
  /** Transactions run again after PostgreSQL aborted them as a deadlock or serialisation victim */
  retried = 0;
  /** Commits made by this process, and how many of them are known to be sealed (for sealSoon()) */
  private visibleCommits = 0;
  private sealedThrough = 0;
  private sealing: Promise<void> | null = null;
  private sealTimer: NodeJS.Timeout | null = null;
  /** What each open transaction wants done once it has committed */
  private readonly onCommit = new WeakMap<EntityManager, Array<() => void>>();

  constructor(
    readonly dataSource: DataSource,
    private readonly onBackgroundError: (error: unknown) => void = () => {},
    private readonly hooks: ChangeHook[] = [],
    private readonly bus: EventBus | null = null,
  ) {}

  addHook(hook: ChangeHook): void {
    this.hooks.push(hook);
  }

  /**
   * Appends an event inside the caller's transaction: if the change rolls back, so does its event,
   * and if the event cannot be written, the change fails.
   */
  async record(tx: EntityManager, actor: Actor, record: AuditRecord): Promise<void> {
    await stageEvent(tx, actor, record);
    for (const hook of this.hooks) await hook.staged(tx, record);
    for (const hook of this.hooks) this.afterCommit(tx, () => hook.committed(record, actor));
  }

  /** A record counted into a later event (AuthFailureFolding): hooks hear it now, as if committed. */
  observe(actor: Actor, record: AuditRecord): void {
    this.runEffects(this.hooks.map((hook) => () => hook.committed(record, actor)));
  }

  /**
   * An auditor's read and its audit event as one statement: one snapshot, one round trip, one
   * commit, and no rows unless the event committed (the answer arrives after the statement's
   * COMMIT); its own event is not in its snapshot, so never in its answer. The statement also
   * looks for events the read could match that are committed (on any instance) but not yet
   * sealed, and then records nothing: those are sealed, and the statement runs again, now
   * checking only for the ones it saw. Only for records no hook stages anything for (audit.query).
   */
  async auditedRead<T>(actor: Actor, record: AuditRecord, read: ReadPlan<T>, unsealed: SqlPart): Promise<T> {
    let seen: string | null = null;
    for (let attempt = 0; attempt <= MAX_RESEALS; attempt++) {
      const rows = (await this.dataSource.query(
        `WITH pending AS (SELECT max(s.id)::text AS last FROM (${unsealed.sql}) s${seen === null ? '' : ` WHERE s.id <= ${seen}`}),
              audit_event AS (${stagingInsert(actor, record, '(SELECT last FROM pending) IS NULL')} RETURNING 1)
         SELECT r.*, pending.last AS "unsealed"
           FROM pending LEFT JOIN (${shiftParameters(read.sql, unsealed.params.length)}) r ON true
          ORDER BY ${read.order}`,
        [...unsealed.params, ...read.params],
      )) as Array<Record<string, unknown>>;
      const pending = rows[0]!.unsealed as string | null;
      if (pending === null) {
        this.runEffects(this.hooks.map((hook) => () => hook.committed(record, actor)));
        this.committed();
        // With no rows, the join still gives one, without the read's columns.
        const found = rows.filter((row) => row[read.marker] !== null);
        for (const row of found) delete row.unsealed;
        return read.finish(found);
      }
      seen ??= pending;
      await this.sealed();
    }
    throw new Error('audit events the read must include could not be sealed');
  }

  /** Runs `effect` once the transaction (one opened by transaction()) has committed; never on rollback. */
  afterCommit(tx: EntityManager, effect: () => void): void {
    this.onCommit.get(tx)?.push(effect);
  }

  /**
   * A change and its audit events in one transaction, sealed into the chain once committed
   * (within UNAWAITED_SEAL_DELAY_MS, or at once when a reader needs it: see settled()).
   * A transaction PostgreSQL aborted as a deadlock or serialisation victim (against the usage
   * writer, say) is run again from the start, after a random pause, three times at most: nothing
   * of it was kept.
   */
  async transaction<T>(work: (tx: EntityManager) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    let stagedAsLiterals = false;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.transactionOnce(work, options);
      } catch (error) {
        // Nothing of the transaction was kept: it runs again, staging its events as literals (as
        // every transaction does from now on, also those in flight that meet the same error).
        if (!stagedAsLiterals && isPreparedStatementMismatch(error)) {
          stagedAsLiterals = true;
          if (!literalStaging.has(this.dataSource)) {
            literalStaging.add(this.dataSource);
            this.reportQuietly(new Error(`audit staging stops using a prepared statement: ${(error as Error).message} (a pooler in transaction mode?)`));
          }
          continue;
        }
        if (attempt >= MAX_TRANSACTION_ATTEMPTS || !isTransientConflict(error)) throw error;
        this.retried++;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * RETRY_JITTER_MS * 2 ** attempt));
      }
    }
  }

  private async transactionOnce<T>(
    work: (tx: EntityManager) => Promise<T>,
    { waitForSeal = false }: TransactionOptions,
  ): Promise<T> {
    const effects: Array<() => void> = [];
    const tail: CommitTail = { statements: [], stagesEvents: false };
    const runner = deferringRunner(this.dataSource.createQueryRunner(), tail, effects);
    let result: T;
    try {
      await runner.startTransaction();
      this.onCommit.set(runner.manager, effects);
      commitTails.set(runner.manager, tail);
      result = await work(runner.manager);
      await runner.commitTransaction();
    } catch (error) {
      if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => {});
      throw error;
    } finally {
      await runner.release();
    }
    this.runEffects(effects);
    if (waitForSeal) {
      this.visibleCommits++;
      await this.sealed();
    } else this.committed();
    return result;
  }

  /** A handler that throws must not turn what it was told about into an error of its own. */
  private reportQuietly(error: unknown): void {
    try {
      this.onBackgroundError(error);
    } catch {
      // nothing more can be done with it
    }
  }

  /** After a commit: an effect that fails (a detector, a cache) must not turn the change into an error. */
  private runEffects(effects: ReadonlyArray<() => void>): void {
    for (const effect of effects) {
      try {
        effect();
      } catch (error) {
        this.onBackgroundError(error);
      }
    }
  }

  /**
   * Resolves once a seal pass that started after this call has finished. Concurrent callers share
   * passes, so one sealing commit covers every writer that committed meanwhile (group commit).
   */
  sealed(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.runSealPasses();
    });
  }

  /** A commit of this process's: sealed a moment later, so a stream of commits shares passes. */
  private committed(): void {
    this.visibleCommits++;
    this.sealSoon();
  }

  private sealSoon(): void {
    if (this.sealTimer) return;
    this.sealTimer = setTimeout(() => {
      this.sealTimer = null;
      if (this.sealedThrough < this.visibleCommits) void this.sealed();
    }, UNAWAITED_SEAL_DELAY_MS);
    this.sealTimer.unref();
  }

  /** For readers of the whole log: seals first when events committed by any instance wait in staging. */
  async settled(): Promise<void> {
    const [pending] = (await this.dataSource.query('SELECT EXISTS (SELECT 1 FROM audit_staging) AS found')) as Array<{ found: boolean }>;
    if (pending!.found) await this.sealed();
  }

  private runSealPasses(): void {
    if (this.sealing) return;
    this.sealing = (async () => {
      while (this.waiting.length > 0) {
        const waiters = this.waiting;
        this.waiting = [];
        const through = this.visibleCommits;
        if (await this.sealQuietly()) this.sealedThrough = Math.max(this.sealedThrough, through);
        waiters.forEach((resolve) => resolve());
      }
      this.sealing = null;
    })();
  }

  /** For events with no surrounding change: denials and authentication failures. */
  async recordAlone(actor: Actor, record: AuditRecord, options: TransactionOptions = {}): Promise<void> {
    await this.transaction((tx) => this.record(tx, actor, record), options);
  }

  /** At shutdown: no timer left behind, the running pass finished, everything committed sealed. */
  async close(): Promise<void> {
    if (this.sealTimer) clearTimeout(this.sealTimer);
    this.sealTimer = null;
    await this.sealing;
    await this.sealed();
  }

  /** Seals every committed staged event; returns how many. */
  async seal(): Promise<number> {
    let total = 0;
    for (;;) {
      const sealed = await this.sealBatch();
      if (sealed.announcement) this.bus?.committed(AUDIT_SEALED_CHANNEL, sealed.announcement);
      total += sealed.count;
      if (sealed.count < SEAL_BATCH) return total;
    }
  }

  /** The change already committed; a failed seal is retried by the next seal or the background pass. */
  async sealQuietly(): Promise<boolean> {
    try {
      await this.seal();
      return true;
    } catch (error) {
      this.onBackgroundError(error);
      return false;
    }
  }

  /**
   * One seal pass in two round trips (every statement of a pass shares the chain lock, so its
   * length is how long writers wait): the first takes the lock, reads the head and a batch of
   * staged events with new ids; the second moves that batch out of staging with each event's id
   * and hash (all PostgreSQL needs from here: it copies the rest), moves the head and commits.
   */
  private async sealBatch(): Promise<{ count: number; announcement: string | null }> {
    const driver = this.dataSource.driver as unknown as { obtainMasterConnection(): Promise<[PoolClient, (error?: unknown) => void]> };
    const [client, release] = await driver.obtainMasterConnection();
    let failure: unknown;
    // A connection lost mid-pass (the server going down) fails the pass; unheard, it would crash the process.
    const onError = (error: unknown) => {
      failure ??= error;
    };
    client.on('error', onError);
    try {
      const results = (await client.query(`
        BEGIN;
        SELECT pg_advisory_xact_lock(${CHAIN_LOCK});
        SELECT hash FROM audit_chain_head;
        SELECT nextval('audit_events_id_seq')::text AS event_id, s.*
          FROM (SELECT xmin::text AS row_version, * FROM audit_staging ORDER BY id LIMIT ${SEAL_BATCH}) s`)) as unknown as QueryResult[];
      const head = (results[2]!.rows[0] as { hash: string } | undefined)?.hash ?? GENESIS_HASH;
      const staged = results[3]!.rows as SealedRow[];
      if (staged.length === 0) {
        await client.query('COMMIT');
        return { count: 0, announcement: null };
      }
      const rows = staged.sort(byStagingId);
      const events = chainEvents(rows, head);
      const last = events.at(-1)!;
      const announcement = JSON.stringify({ from: events[0]!.id, to: last.id });
      const notify = this.bus?.statement(AUDIT_SEALED_CHANNEL, announcement);
      await client.query(`
        ${moveStatement(rows, events)};
        UPDATE audit_chain_head SET last_id = ${last.id}, hash = ${sqlLiteral(last.hash)};
        ${rollupStatement(events)};
        ${notify ? `${notify};` : ''}
        COMMIT`);
      return { count: events.length, announcement };
    } catch (error) {
      failure = error;
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      // After a failure the connection goes, not back to the pool: it may be mid-transaction or broken.
      client.off('error', onError);
      release(failure);
    }
  }
}

const byStagingId = (a: { id: string }, b: { id: string }) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1);

/** A staged row as the seal read it: with its new id, and its version (xmin) so it moves only unchanged. */
type SealedRow = StagedRow & { event_id: string; row_version: string };

/** Staged rows (in staging order) as chained events; the new ids, whatever order they were drawn in, follow that order. */
function chainEvents(rows: readonly SealedRow[], head: string): AuditEventEntity[] {
  const ids = rows.map((row) => ({ id: row.event_id })).sort(byStagingId).map((row) => row.id);
  let prevHash = head;
  return rows.map((row, i) => {
    const event = new AuditEventEntity();
    Object.assign(event, {
      id: ids[i]!,
      occurredAt: row.occurred_at,
      action: row.action,
      outcome: row.outcome,
      actorType: row.actor_type,
      actorId: row.actor_id,
      actorKeyId: row.actor_key_id,
      targetType: row.target_type,
      targetId: row.target_id,
      ip: row.ip,
      userAgent: row.user_agent,
      requestId: row.request_id,
      details: row.details,
      prevHash,
    });
    event.hash = eventHash(event);
    prevHash = event.hash;
    return event;
  });
}

/**
 * Moves the staged rows into audit_events under their ids and hashes: PostgreSQL copies every
 * other field from the row it hashed (its time cut to the millisecond, as it was read here), so
 * only numbers and hex travel back. A row changed since it was read (another xmin) stays, and
 * fewer rows moved than hashed would leave the chain pointing at an event that is not there or
 * not as hashed: the statement then fails, and the pass with it.
 */
function moveStatement(rows: readonly SealedRow[], events: readonly AuditEventEntity[]): string {
  const digits = (values: readonly string[], type: string) => `'{${values.map((value) => (/^\d+$/.test(value) ? value : 'NULL')).join(',')}}'::${type}[]`;
  const hex = (values: readonly string[]) => `'{${values.map((value) => (/^[0-9a-f]+$/.test(value) ? value : 'NULL')).join(',')}}'::text[]`;
  return `
        WITH chain (staging_id, row_version, event_id, prev_hash, hash) AS (
          SELECT * FROM unnest(${digits(rows.map((row) => row.id), 'bigint')}, ${digits(rows.map((row) => row.row_version), 'xid')},
                               ${digits(events.map((e) => e.id), 'bigint')}, ${hex(events.map((e) => e.prevHash))}, ${hex(events.map((e) => e.hash))})
        ), moved AS (
          DELETE FROM audit_staging s USING chain c WHERE s.id = c.staging_id AND s.xmin = c.row_version
          RETURNING c.event_id, date_trunc('milliseconds', s.occurred_at) AS occurred_at, s.action, s.outcome, s.actor_type,
                    s.actor_id, s.actor_key_id, s.target_type, s.target_id, s.ip, s.user_agent, s.request_id, s.details,
                    c.prev_hash, c.hash
        ), appended AS (
          INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type,
                                    target_id, ip, user_agent, request_id, details, prev_hash, hash)
          SELECT * FROM moved RETURNING 1
        )
        SELECT CASE WHEN count(*) = ${events.length} THEN 'moved'
                    ELSE ('audit seal moved ' || count(*) || ' of ${events.length} hashed events')::int::text END
          FROM appended`;
}
