import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AuditCountsByDocument, AuditIdsDocument, AuditIntegrityCheckDocument, AuditTimelineByDocument, CreateRoleDocument } from './generated/graphql';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { createDataSource } from '../src/db/data-source';
import { maintainPartitions } from '../src/db/partitions';
import { startTestServer, type TestServer } from './helpers/server';
import { monthPartition } from './helpers/audit-database';

/**
 * audit_events is partitioned by month (migrations/1732800000000-audit-partitions.ts); events are
 * sealed into it with literal SQL riding on two round trips (src/services/audit.service.ts).
 */

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());


async function partitionOf(id: string): Promise<string> {
  const [row] = await t.db.query<{ partition: string }>('SELECT tableoid::regclass::text AS partition FROM audit_events WHERE id = $1', [id]);
  assert.ok(row, `event ${id} exists`);
  return row.partition;
}

test('events land in the partition of their month, made ahead from last month to three months on', async () => {
  const { createRole } = await t.ok(t.adminKey, CreateRoleDocument, { input: { name: 'partitioned-role', permissions: [] } });
  const page = await t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['role.create'], targetId: createRole.id }, first: 5 });
  assert.equal(page.auditEvents.nodes.length, 1);
  assert.equal(await partitionOf(page.auditEvents.nodes[0]!.id), monthPartition(new Date()));

  const partitions = (await t.db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass`,
  )).map((r) => r.name);
  const now = new Date();
  for (let offset = -1; offset <= 3; offset++) {
    const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
    assert.ok(partitions.includes(monthPartition(month)), `${monthPartition(month)} exists: ${partitions.join(', ')}`);
  }
  assert.ok(partitions.includes('audit_events_default'));
  const [again] = await t.db.query<{ made: number }>(`SELECT keyledger_audit_partitions(now() - interval '1 month', now() + interval '3 months') AS made`);
  assert.equal(again!.made, 0, 'making the partitions again is a no-op');
});

test('every partition refuses UPDATE, DELETE and TRUNCATE, not only the parent', async () => {
  const partition = monthPartition(new Date());
  await assert.rejects(t.db.query(`TRUNCATE ${partition}`), /append-only/);
  await assert.rejects(t.db.query('TRUNCATE audit_events_default'), /append-only/);
  await assert.rejects(t.db.query(`UPDATE ${partition} SET action = 'x'`), /append-only/);
  await assert.rejects(t.db.query(`DELETE FROM ${partition}`), /append-only/);
  const [{ count }] = await t.db.query<{ count: string }>(`SELECT count(*)::text AS count FROM ${partition}`);
  assert.ok(Number(count) > 0, 'the events are still there');
});

test('an event outside every month partition is sealed into the default partition and the chain still verifies', async () => {
  await t.db.query(
    `INSERT INTO audit_staging (occurred_at, action, outcome, actor_type, details)
     VALUES ('2099-06-01T00:00:00Z', 'test.future', 'SUCCESS', 'SYSTEM', '{"clock":"skewed"}')`,
  );
  await t.server.services.audit.seal();
  const [row] = await t.db.query<{ id: string }>(`SELECT id::text FROM audit_events WHERE action = 'test.future'`);
  assert.equal(await partitionOf(row!.id), 'audit_events_default');
  const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, {});
  assert.equal(report.auditIntegrity.ok, true, JSON.stringify(report));
  await t.server.services.audit.seal();
  const [head] = await t.db.query<{ last_id: string; hash: string }>('SELECT last_id::text, hash FROM audit_chain_head');
  const [last] = await t.db.query<{ id: string; hash: string }>('SELECT id::text, hash FROM audit_events ORDER BY id DESC LIMIT 1');
  assert.deepEqual({ id: head!.last_id, hash: head!.hash }, { id: last!.id, hash: last!.hash }, 'the stored head is the last event of the chain');
});

test('text that SQL quoting could mangle is stored, returned and hashed exactly', async () => {
  const tricky = [`it's`, 'back\\slash', '$$ dollar $$', "E'\\x41'", 'ünïcödé 😀', 'line\nbreak\ttab', '"quoted"', ''];
  const description = tricky.join(' | ');
  const created = await t.request(t.adminKey, CreateRoleDocument, { input: { name: 'quoting-role', description, permissions: [] } }, {
    'user-agent': `agent's "\\" $$ ü`,
  });
  assert.equal(created.errors, undefined, JSON.stringify(created.errors));
  const createRole = created.data!.createRole;
  const page = await t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['role.create'], targetId: createRole.id }, first: 5 });
  const details = page.auditEvents.nodes[0]!.details as Record<string, unknown>;
  assert.ok(JSON.stringify(details).includes(JSON.stringify(description).slice(1, -1)), `details keep the text: ${JSON.stringify(details)}`);
  const [stored] = await t.db.query<{ user_agent: string }>(`SELECT user_agent FROM audit_events WHERE action = 'role.create' AND target_id = $1`, [createRole.id]);
  assert.equal(stored!.user_agent, `agent's "\\" $$ ü`);
  const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, {});
  assert.equal(report.auditIntegrity.ok, true, 'hashes recomputed from what was stored match');
});

test('a month-bounded query reads one partition', async () => {
  const now = new Date();
  const [plan] = await t.db.query<{ 'QUERY PLAN': unknown }>(
    'EXPLAIN (FORMAT JSON) SELECT id FROM audit_events WHERE occurred_at >= $1 AND occurred_at < $2',
    [new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 2)), new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 3))],
  );
  const text = JSON.stringify(plan!['QUERY PLAN']);
  const scanned = new Set([...text.matchAll(/"Relation Name":"(audit_events_[a-z0-9_]+)"/g)].map((m) => m[1]));
  assert.deepEqual([...scanned], [monthPartition(new Date())], text);
});

test('the address (CIDR) and outcome filters are answered by index scans', async () => {
  const plan = async (sql: string, params: unknown[]) => {
    await t.db.query('SET enable_seqscan = off'); // a tiny table would be scanned whole anyway
    try {
      const [row] = await t.db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params);
      return JSON.stringify(row!['QUERY PLAN']);
    } finally {
      await t.db.query('RESET enable_seqscan');
    }
  };
  const cidr = await plan('SELECT id FROM audit_events e WHERE e.ip::inet <<= $1::inet ORDER BY id DESC LIMIT 50', ['10.1.0.0/16']);
  assert.match(cidr, /"Index Cond":"\(\(\(ip\)::inet >= '10\.1\.0\.0\/16'::inet\)/, cidr);
  const denied = await plan('SELECT id FROM audit_events e WHERE e.outcome = $1 ORDER BY id DESC LIMIT 50', ['DENIED']);
  assert.match(denied, /"Index Cond":"\(outcome = 'DENIED'::text\)"/, denied);
});


test('the details index of every partition, months made later included, keeps no pending list a query must read through', async () => {
  await t.db.query(`SELECT keyledger_audit_partitions('2030-01-01', '2030-02-01')`);
  const indexes = await t.db.query<{ name: string; options: string[] | null }>(
    `SELECT c.relname AS name, c.reloptions AS options
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_events_details'::regclass`,
  );
  assert.ok(indexes.some((index) => index.name.startsWith('audit_events_2030_01')), indexes.map((index) => index.name).join(', '));
  assert.ok(indexes.length >= 6);
  for (const index of indexes) assert.deepEqual(index.options, ['fastupdate=off'], index.name);
});
test('auditCounts from the hourly rollup agree with counting the events, with partial hours at both ends', async () => {
  // Events spread over four hours of one day, some denied, of two target types.
  const times = ['10:05', '10:40', '10:59', '11:00', '11:30', '12:10', '12:45', '13:20', '13:50'];
  for (const [i, time] of times.entries()) {
    await t.db.query(
      `INSERT INTO audit_staging (occurred_at, action, outcome, actor_type, target_type)
       VALUES ($1, $2, $3, 'SYSTEM', $4)`,
      [`2026-03-03T${time}:00Z`, i % 3 === 0 ? 'rollup.one' : 'rollup.two', i % 4 === 0 ? 'DENIED' : 'SUCCESS', i % 2 === 0 ? 'api_key' : null],
    );
  }
  await t.server.services.audit.seal();
  const ranges = [
    { from: '2026-03-03T10:30:00Z', to: '2026-03-03T13:30:00Z' },
    { from: '2026-03-03T11:00:00Z', to: '2026-03-03T13:00:00Z' },
    { from: '2026-03-03T10:50:00Z', to: '2026-03-03T10:59:30Z' },
    { to: '2026-03-03T12:30:00Z' },
  ];
  const columns = { ACTION: 'action', OUTCOME: 'outcome', TARGET_TYPE: 'target_type' } as const;
  for (const range of ranges) {
    for (const [groupBy, column] of Object.entries(columns) as Array<[keyof typeof columns, string]>) {
      for (const extra of [{}, { actions: ['rollup.*'] }, { outcome: 'DENIED' as const }]) {
        const filter = { actions: ['rollup.*'], ...range, ...extra };
        const counted = await t.ok(t.adminKey, AuditCountsByDocument, { filter, groupBy, limit: 50 });
        const expected = await t.db.query<{ key: string; count: number }>(
          `SELECT coalesce(${column}, '(none)') AS key, count(*)::int AS count FROM audit_events
            WHERE action LIKE 'rollup.%' AND ($1::timestamptz IS NULL OR occurred_at >= $1) AND occurred_at < $2
              AND ($3::text IS NULL OR outcome = $3)
            GROUP BY 1 ORDER BY 2 DESC, 1 ASC`,
          [range.from ?? null, range.to, 'outcome' in extra ? extra.outcome : null],
        );
        assert.deepEqual(counted.auditCounts, expected, `${groupBy} over ${JSON.stringify(filter)}`);
      }
    }
  }
  const rolled = await t.db.query<{ count: string }>(`SELECT sum(count)::text AS count FROM audit_counts_hourly WHERE action LIKE 'rollup.%'`);
  assert.equal(Number(rolled[0]!.count), times.length, 'the rollup holds every sealed event once');

  // Whole hours are read from the rollup, not counted from the events: a changed rollup row shows.
  const bump = (by: number) =>
    t.db.query(`UPDATE audit_counts_hourly SET count = count + $1 WHERE action = 'rollup.one' AND outcome = 'SUCCESS' AND hour = '2026-03-03T11:00:00Z'`, [by]);
  const one = async () =>
    (await t.ok(t.adminKey, AuditCountsByDocument, { filter: { actions: ['rollup.one'], from: '2026-03-03T11:00:00Z', to: '2026-03-03T13:00:00Z' }, groupBy: 'ACTION' }))
      .auditCounts[0]!.count;
  const before = await one();
  await bump(100);
  try {
    assert.equal(await one(), before + 100);
  } finally {
    await bump(-100);
  }
});

test('counts and timelines over days read whole days and hours from the rollups and agree with the events', async () => {
  // Events over five days of April, at hours and minutes that leave partial days and hours at every edge.
  const times: string[] = [];
  for (let day = 1; day <= 5; day++) {
    for (const time of ['00:00', '03:17', '11:59', '12:00', '18:45', '23:59']) times.push(`2026-04-0${day}T${time}:00Z`);
  }
  for (const [i, time] of times.entries()) {
    await t.db.query(
      `INSERT INTO audit_staging (occurred_at, action, outcome, actor_type, target_type) VALUES ($1, $2, $3, 'SYSTEM', $4)`,
      [time, i % 3 === 0 ? 'daily.one' : 'daily.two', i % 5 === 0 ? 'DENIED' : 'SUCCESS', i % 2 === 0 ? 'role' : null],
    );
  }
  await t.server.services.audit.seal();
  const ranges = [
    { from: '2026-04-01T03:30:00Z', to: '2026-04-04T18:50:00Z' }, // partial hours and days at both ends
    { from: '2026-04-02T00:00:00Z', to: '2026-04-05T00:00:00Z' }, // whole days only
    { from: '2026-04-01T11:00:00Z', to: '2026-04-03T12:00:00Z' }, // whole hours, partial days
    { from: '2026-04-03T11:10:00Z', to: '2026-04-03T23:59:30Z' }, // inside one day
    { from: '2026-04-02T05:00:00Z' },
    { to: '2026-04-03T12:00:30Z' },
  ];
  const where = `action LIKE 'daily.%' AND ($1::timestamptz IS NULL OR occurred_at >= $1) AND ($2::timestamptz IS NULL OR occurred_at < $2)
                 AND ($3::text IS NULL OR outcome = $3)`;
  for (const range of ranges) {
    for (const outcome of [null, 'DENIED' as const]) {
      const filter = { actions: ['daily.*'], ...range, ...(outcome ? { outcome } : {}) };
      const params = [range.from ?? null, range.to ?? null, outcome];
      const counted = await t.ok(t.adminKey, AuditCountsByDocument, { filter, groupBy: 'ACTION', limit: 50 });
      const expected = await t.db.query(
        `SELECT action AS key, count(*)::int AS count FROM audit_events WHERE ${where} GROUP BY 1 ORDER BY 2 DESC, 1 ASC`,
        params,
      );
      assert.deepEqual(counted.auditCounts, expected, `counts over ${JSON.stringify(filter)}`);
      for (const bucket of ['MINUTE', 'HOUR', 'DAY'] as const) {
        const timeline = await t.ok(t.adminKey, AuditTimelineByDocument, { filter, bucket });
        const rows = await t.db.query<{ start: Date; count: number }>(
          `SELECT date_trunc('${bucket.toLowerCase()}', occurred_at, 'UTC') AS start, count(*)::int AS count FROM audit_events
            WHERE ${where} GROUP BY 1 ORDER BY 1`,
          params,
        );
        assert.deepEqual(
          timeline.auditTimeline,
          rows.map((r) => ({ start: r.start.toISOString(), count: r.count })),
          `${bucket} timeline over ${JSON.stringify(filter)}`,
        );
      }
    }
  }
  const daily = await t.db.query<{ count: string }>(`SELECT sum(count)::text AS count FROM audit_counts_daily WHERE action LIKE 'daily.%'`);
  assert.equal(Number(daily[0]!.count), times.length, 'the daily rollup holds every sealed event once');

  // Whole days come from the daily rollup: a changed daily row shows in counts and in the DAY timeline.
  const bump = (by: number) =>
    t.db.query(`UPDATE audit_counts_daily SET count = count + $1 WHERE action = 'daily.one' AND outcome = 'SUCCESS' AND day = '2026-04-03T00:00:00Z'`, [by]);
  const filter = { actions: ['daily.one'], from: '2026-04-02T00:00:00Z', to: '2026-04-05T00:00:00Z' };
  const read = async () => ({
    count: (await t.ok(t.adminKey, AuditCountsByDocument, { filter, groupBy: 'ACTION' })).auditCounts[0]!.count,
    day: (await t.ok(t.adminKey, AuditTimelineByDocument, { filter, bucket: 'DAY' })).auditTimeline.find((b) => b.start === '2026-04-03T00:00:00.000Z')!.count,
  });
  const before = await read();
  await bump(100);
  try {
    assert.deepEqual(await read(), { count: before.count + 100, day: before.day + 100 });
  } finally {
    await bump(-100);
  }
});

test('partitions are whole UTC months whatever the session time zone', async () => {
  for (const zone of ['America/New_York', 'Europe/Berlin', 'Pacific/Chatham']) {
    await t.db.query(`SET TimeZone = '${zone}'`);
    await t.db.query(`SELECT keyledger_audit_partitions('2031-01-15Z', '2031-12-01Z')`);
  }
  await t.db.query('SET TimeZone = UTC');
  const bounds = await t.db.query<{ name: string; bound: string }>(
    `SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_events'::regclass AND c.relname LIKE 'audit_events_2031_%' ORDER BY c.relname`,
  );
  assert.equal(bounds.length, 11);
  for (const { name, bound } of bounds) {
    const month = Number(name.slice(-2));
    const from = new Date(Date.UTC(2031, month - 1, 1)).toISOString().slice(0, 10);
    const to = new Date(Date.UTC(2031, month, 1)).toISOString().slice(0, 10);
    assert.equal(bound, `FOR VALUES FROM ('${from} 00:00:00+00') TO ('${to} 00:00:00+00')`, name);
  }
});

test('an event recorded in a savepoint that rolls back is not committed with the outer change', async () => {
  const audit = t.server.services.audit;
  await audit.transaction(async (tx) => {
    await audit.record(tx, SYSTEM_ACTOR, { action: 'savepoint.outer' });
    await tx
      .transaction(async (inner) => {
        await audit.record(inner, SYSTEM_ACTOR, { action: 'savepoint.inner' });
        throw new Error('inner work fails');
      })
      .catch(() => undefined);
  });
  const actions = (await t.db.query<{ action: string }>(`SELECT action FROM audit_events WHERE action LIKE 'savepoint.%'`)).map((r) => r.action);
  assert.deepEqual(actions, ['savepoint.outer']);
});

test('instances maintaining partitions at the same moment do not collide', async () => {
  const dataSource = createDataSource(t.db.url, { onQuery: () => {}, onError: () => {} }, 8);
  await dataSource.initialize();
  try {
    // Six instances waking together, in a year whose months nobody has made yet.
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => maintainPartitions(dataSource, new Date('2040-01-15T00:00:00Z'))));
    assert.deepEqual(results.filter((r) => r.status === 'rejected'), []);
    const usage = await t.db.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass AND c.relname LIKE 'usage_events_2040_%' ORDER BY 1`,
    );
    assert.deepEqual(usage.map((r) => r.name), ['usage_events_2040_01', 'usage_events_2040_02', 'usage_events_2040_03']);
  } finally {
    await dataSource.destroy();
  }
});
