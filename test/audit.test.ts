import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AuditCountsByDocument,
  AuditIdsDocument,
  type AuditIdsQuery,
  AuditIntegrityCheckDocument,
  AuditTimelineByDocument,
  CreateRoleDocument,
  UpdateRoleDocument,
  ViewerDocument,
} from './generated/graphql';
import { CHAIN_LOCK } from '../src/services/audit.service';
import { holdLock } from './helpers/database';
import { whileAuditRefuses } from './helpers/fixtures';
import { errorCodes, postGraphQL, startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';

let t: TestServer;
before(async () => {
  t = await startTestServer();
  // Some history: role creations and updates, from two addresses.
  for (let i = 0; i < 6; i++) {
    const role = await t.ok(t.adminKey, CreateRoleDocument, { input: { name: `audit-role-${i}`, permissions: ['invoices:read'] } });
    if (i % 2 === 0) await t.ok(t.adminKey, UpdateRoleDocument, { id: role.createRole.id, input: { description: `v${i}` } });
  }
  await t.request(t.adminKey, CreateRoleDocument, { input: { name: 'from-proxy', permissions: [] } }, { 'x-forwarded-for': '10.1.2.3' });
});
after(() => t.close());

async function allEvents(filter: Record<string, unknown> = {}) {
  const events: Array<{ id: string; action: string }> = [];
  let after: string | null | undefined = null;
  do {
    const page: AuditIdsQuery = await t.ok(t.adminKey, AuditIdsDocument, { filter, first: 4, after, order: 'ASC' });
    events.push(...page.auditEvents.nodes);
    after = page.auditEvents.pageInfo.hasNextPage ? page.auditEvents.pageInfo.endCursor : null;
  } while (after);
  return events;
}

describe('ad-hoc queries', () => {
  test('action prefixes and exact actions filter; pages in ASC order have no duplicates or gaps', async () => {
    const roleEvents = await allEvents({ actions: ['role.*'] });
    assert.ok(roleEvents.length >= 10);
    assert.ok(roleEvents.every((e) => e.action.startsWith('role.')));
    const ids = roleEvents.map((e) => Number(e.id));
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'ascending');
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    const updates = await allEvents({ actions: ['role.update'] });
    assert.equal(updates.length, 3);
  });

  test('counts and timeline agree with the event list', async () => {
    const filter = { actions: ['role.*'] };
    const events = await allEvents(filter);
    const counts = await t.ok(t.adminKey, AuditCountsByDocument, { filter, groupBy: 'ACTION' });
    const byAction = Object.fromEntries(counts.auditCounts.map((c) => [c.key, c.count]));
    assert.equal(byAction['role.create'], events.filter((e) => e.action === 'role.create').length);
    assert.equal(byAction['role.update'], 3);
    const timeline = await t.ok(t.adminKey, AuditTimelineByDocument, { filter, bucket: 'MINUTE' });
    assert.equal(timeline.auditTimeline.reduce((sum, b) => sum + b.count, 0), events.length);
  });

  test('an address or CIDR filter matches the source address', async () => {
    const proxied = await allEvents({ ip: '10.1.0.0/16' });
    assert.equal(proxied.length, 0, 'TRUST_PROXY is off: X-Forwarded-For is ignored');
    const local = await allEvents({ ip: '127.0.0.1', actions: ['role.create'] });
    assert.equal(local.length, 7);
  });

  test('detailsContains uses JSON containment', async () => {
    const events = await allEvents({ detailsContains: { after: { description: 'v2' } } });
    assert.equal(events.length, 1);
    assert.equal(events[0]!.action, 'role.update');
  });

  test('bad filters are BAD_USER_INPUT, never a 500', async () => {
    const cases: Array<Record<string, unknown>> = [
      { filter: { ip: '10.0.0.0/99' } },
      { filter: { from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z' } },
      { filter: { from: '2020-02-30T00:00:00Z' } },
      { filter: { actions: ['DROP TABLE'] } },
      { after: 'tampered' },
      { first: 501 },
    ];
    for (const variables of cases) {
      const result = await t.request(t.adminKey, AuditIdsDocument, variables);
      assert.deepEqual(errorCodes(result), ['BAD_USER_INPUT'], JSON.stringify(variables));
    }
  });

  test('auditors’ queries are audited as audit.query with the filter', async () => {
    await t.ok(t.adminKey, AuditIdsDocument, { filter: { targetType: 'role-marker-query' } });
    const events = await t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['audit.query'], detailsContains: { filter: { targetType: 'role-marker-query' } } } });
    assert.equal(events.auditEvents.nodes.length, 1);
  });

  test('a query whose audit.query event cannot be written answers no data, and leaves no event', async () => {
    // The extra prefix matches nothing, so the filter still selects the role history, and marks the event.
    const filter = { actions: ['role.*', 'refused_read.*'] };
    assert.ok((await t.ok(t.adminKey, AuditIdsDocument, { filter })).auditEvents.nodes.length > 0, 'the read has data to withhold');
    const answers = await whileAuditRefuses(t.db, 'audit.query', 'refused_read', () =>
      Promise.all([
        t.request(t.adminKey, AuditIdsDocument, { filter }),
        t.request(t.adminKey, AuditCountsByDocument, { filter, groupBy: 'ACTION' }),
        t.request(t.adminKey, AuditTimelineByDocument, { filter, bucket: 'DAY' }),
      ]),
    );
    for (const answer of answers) {
      assert.deepEqual(errorCodes(answer), ['INTERNAL_SERVER_ERROR']);
      assert.equal(answer.data, null, 'no rows without the event');
      assert.doesNotMatch(answer.errors![0]!.message, /trigger|refused|audit_staging|insert/i);
    }
    const recorded = await t.db.query(`SELECT id FROM audit_events WHERE action = 'audit.query' AND details::text LIKE '%refused_read%'`);
    assert.equal(recorded.length, 1, 'only the first, answered query was recorded');
  });

  test('an auditor waits for the sealing of its own earlier queries only when its filter could match them', async () => {
    // Sealing stalls while the chain lock is held elsewhere.
    await t.db.query('SELECT pg_advisory_lock($1)', [CHAIN_LOCK]);
    let matching: Promise<AuditIdsQuery> | null = null;
    let upper: Promise<AuditIdsQuery> | null = null;
    try {
      await t.ok(t.adminKey, AuditIdsDocument, { filter: { targetType: 'stalled-seal-a' } });
      // Its audit.query event is committed but not sealed; a query that cannot see it goes ahead.
      const other = t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['role.*'] } });
      const answered = await Promise.race([other.then(() => 'answered'), new Promise((resolve) => setTimeout(resolve, 2000, 'waiting'))]);
      assert.equal(answered, 'answered', 'a query its earlier event cannot match does not wait for the seal');
      assert.ok((await other).auditEvents.nodes.length > 0);
      // One that could see it waits for the seal, so that it does.
      matching = t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['audit.query'], detailsContains: { filter: { targetType: 'stalled-seal-a' } } } });
      // The actor's id in capitals matches too, as the uuid column compares.
      const { user } = (await t.ok(t.adminKey, ViewerDocument, {})).viewer;
      upper = t.ok(t.adminKey, AuditIdsDocument, { filter: { actorId: user!.id.toUpperCase(), actions: ['audit.query'] } });
      const early = await Promise.race([
        Promise.race([matching, upper]).then(() => 'answered'),
        new Promise((resolve) => setTimeout(resolve, 500, 'waiting')),
      ]);
      assert.equal(early, 'waiting', 'the matching queries wait for the stalled seal');
    } finally {
      await t.db.query('SELECT pg_advisory_unlock($1)', [CHAIN_LOCK]);
    }
    assert.equal((await matching).auditEvents.nodes.length, 1, 'and then sees the earlier query');
    assert.ok((await upper)!.auditEvents.nodes.length >= 2);
  });

  test('a query never sees its own audit.query event, also when it waited for a seal and read again', async () => {
    const query = `query($f: AuditEventFilter, $first: Int) { auditEvents(filter: $f, first: $first) { nodes { details } } }`;
    // The extra prefix matches no action; it marks these queries' events, which the containment selects.
    const f = { actions: ['audit.query', 'own_event_marker.*'], detailsContains: { filter: { actions: ['own_event_marker.*'] } } };
    const firsts = (response: GraphQLResponse<unknown>) =>
      (response.data as { auditEvents: { nodes: Array<{ details: { first: number } }> } }).auditEvents.nodes.map((n) => n.details.first);
    await t.db.query('SELECT pg_advisory_lock($1)', [CHAIN_LOCK]);
    let second: Promise<GraphQLResponse<unknown>>;
    try {
      // The first query's event stays staged while sealing is stalled; the second must wait for it.
      const first = await postGraphQL(t.url, t.adminKey, query, { f, first: 7 });
      assert.deepEqual(firsts(first), []);
      second = postGraphQL(t.url, t.adminKey, query, { f, first: 9 });
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      await t.db.query('SELECT pg_advisory_unlock($1)', [CHAIN_LOCK]);
    }
    assert.deepEqual(firsts(await second), [7], 'the earlier query, not its own');
    const third = await postGraphQL(t.url, t.adminKey, query, { f, first: 11 });
    assert.deepEqual(firsts(third), [9, 7]);
  });

  test('a change committed by another instance, its seal not yet run, is sealed before a reader who could see it reads', async () => {
    // What another instance leaves between its commit and its seal: the event in staging only.
    const stage = (targetId: string) =>
      t.db.query(
        `INSERT INTO audit_staging (occurred_at, action, outcome, actor_type, target_type, target_id, details)
         VALUES (now(), 'role.create', 'SUCCESS', 'SYSTEM', 'role', $1, '{"elsewhere": true}')`,
        [targetId],
      );
    const staged = async () => (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_staging WHERE target_id = $1', ['elsewhere-1']))[0]!.n;
    // The chain lock held here keeps the once-a-second sweeper from sealing meanwhile, and a
    // reader that tried to seal would wait for it: this one must answer without.
    const sealing = await holdLock(t.db.url, 'SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    try {
      await stage('elsewhere-1');
      // A reader it cannot concern does not wait for it (nor seal it).
      const unrelated = await t.ok(t.adminKey, AuditIdsDocument, { filter: { targetType: 'no-such-type' } });
      assert.equal(unrelated.auditEvents.nodes.length, 0);
      assert.equal(await staged(), 1, 'still staged after an unrelated read');
    } finally {
      await sealing.release();
    }
    // One that could see it gets it, sealed into the chain.
    const seen = await t.ok(t.adminKey, AuditIdsDocument, { filter: { targetId: 'elsewhere-1' } });
    assert.equal(seen.auditEvents.nodes.length, 1, 'the other instance’s event is read');
    assert.equal(await staged(), 0, 'it was sealed first');
    await stage('elsewhere-2');
    const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, {});
    assert.equal(report.auditIntegrity.ok, true);
    assert.equal((await t.ok(t.adminKey, AuditIdsDocument, { filter: { targetId: 'elsewhere-2' } })).auditEvents.nodes.length, 1);
  });
});

describe('tamper evidence', () => {
  test('the chain verifies; UPDATE, DELETE and TRUNCATE are rejected by PostgreSQL itself', async () => {
    const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, {});
    assert.equal(report.auditIntegrity.ok, true);
    assert.ok(report.auditIntegrity.checkedEvents > 10);
    await assert.rejects(t.db.query(`UPDATE audit_events SET action = 'x' WHERE id = 1`), /append-only/);
    await assert.rejects(t.db.query('DELETE FROM audit_events WHERE id = 1'), /append-only/);
    await assert.rejects(t.db.query('TRUNCATE audit_events'), /append-only/);
  });

  test('a superuser editing one event with triggers disabled is reported at exactly that event', async () => {
    const [victim] = await t.db.query<{ id: string }>(`SELECT id::text FROM audit_events WHERE action = 'role.update' ORDER BY id LIMIT 1`);
    await t.db.query('ALTER TABLE audit_events DISABLE TRIGGER USER');
    await t.db.query(`UPDATE audit_events SET details = '{"after":{"description":"forged"}}' WHERE id = $1`, [victim!.id]);
    await t.db.query('ALTER TABLE audit_events ENABLE TRIGGER USER');
    const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, {});
    assert.equal(report.auditIntegrity.ok, false);
    assert.equal(report.auditIntegrity.firstInvalidEventId, victim!.id);
  });
});

describe('concurrency', () => {
  test('concurrent writers keep one unbroken chain', async () => {
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => t.ok(t.adminKey, CreateRoleDocument, { input: { name: `concurrent-${i}`, permissions: [] } })),
    );
    // The tamper test above broke the chain on purpose: check only what was written since.
    const [{ since }] = await t.db.query<{ since: Date }>(`SELECT min(occurred_at) AS since FROM audit_events WHERE details::text LIKE '%concurrent-%'`);
    const report = await t.ok(t.adminKey, AuditIntegrityCheckDocument, { from: since.toISOString() });
    assert.equal(report.auditIntegrity.ok, true);
    assert.ok(report.auditIntegrity.checkedEvents >= 40);
  });

  test('paging through a range while writers insert yields no duplicates and no gaps', async () => {
    const before = await allEvents({ actions: ['role.*'] });
    const seen: string[] = [];
    let after: string | null | undefined = null;
    let writes = 0;
    do {
      const page: AuditIdsQuery = await t.ok(t.adminKey, AuditIdsDocument, { filter: { actions: ['role.*'] }, first: 5, after, order: 'DESC' });
      seen.push(...page.auditEvents.nodes.map((n) => n.id));
      // New events arrive between pages; DESC paging must still see every older event exactly once.
      await t.ok(t.adminKey, CreateRoleDocument, { input: { name: `while-paging-${writes++}`, permissions: [] } });
      after = page.auditEvents.pageInfo.hasNextPage ? page.auditEvents.pageInfo.endCursor : null;
    } while (after);
    assert.equal(new Set(seen).size, seen.length, 'no duplicates');
    const expected = before.map((e) => e.id);
    assert.deepEqual(seen.filter((id) => expected.includes(id)).sort(), [...expected].sort(), 'no gaps among the events that existed');
  });
});
