import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AuditIdsDocument, AuditIntegrityCheckDocument, CreateRoleDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

/**
 * audit_events is partitioned by month (migrations/1732800000000-audit-partitions.ts); events are
 * sealed into it with literal SQL riding on two round trips (src/services/audit.service.ts).
 */

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const monthName = (date: Date) => `audit_events_${date.getUTCFullYear()}_${String(date.getUTCMonth() + 1).padStart(2, '0')}`;

async function partitionOf(id: string): Promise<string> {
  const [row] = await t.db.query<{ partition: string }>('SELECT tableoid::regclass::text AS partition FROM audit_events WHERE id = $1', [id]);
  assert.ok(row, `event ${id} exists`);
  return row.partition;
}

test('events land in the partition of their month, made ahead from last month to three months on', async () => {
  const { createRole } = await t.ok(t.adminKey, CreateRoleDocument, { input: { name: 'partitioned-role', permissions: [] } });
  const page = await t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['role.create'], targetId: createRole.id }, first: 5 });
  assert.equal(page.auditEvents.nodes.length, 1);
  assert.equal(await partitionOf(page.auditEvents.nodes[0]!.id), monthName(new Date()));

  const partitions = (await t.db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass`,
  )).map((r) => r.name);
  const now = new Date();
  for (let offset = -1; offset <= 3; offset++) {
    const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
    assert.ok(partitions.includes(monthName(month)), `${monthName(month)} exists: ${partitions.join(', ')}`);
  }
  assert.ok(partitions.includes('audit_events_default'));
  const [again] = await t.db.query<{ made: number }>(`SELECT keyledger_audit_partitions(now() - interval '1 month', now() + interval '3 months') AS made`);
  assert.equal(again!.made, 0, 'making the partitions again is a no-op');
});

test('every partition refuses UPDATE, DELETE and TRUNCATE, not only the parent', async () => {
  const partition = monthName(new Date());
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
  assert.deepEqual([...scanned], [monthName(new Date())], text);
});
