import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { ActorType, AuditOutcome } from '../src/entities/enums';
import { SYSTEM_ACTOR } from '../src/services/actor';
import { AuditEventEntity } from '../src/entities';
import { eventHash } from '../src/services/audit.service';
import { rollupStatement } from '../src/services/audit-rollup';
import { applyRetention } from '../src/services/audit-retention';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * auditIntegrity against a superuser who edits the audit tables behind the server's back (triggers
 * off: `session_replication_role = replica`). Each test tampers with a database of its own.
 */

interface Report {
  ok: boolean;
  checkedEvents: number;
  firstInvalidEventId: string | null;
  headHash: string | null;
  problem: string | null;
}

let t: TestServer | null = null;
afterEach(async () => {
  await t?.close();
  t = null;
});

async function serverWithEvents(count: number): Promise<TestServer> {
  t = await startTestServer();
  for (let i = 0; i < count; i++) await t.server.services.audit.recordAlone(SYSTEM_ACTOR, { action: 'test.event', details: { i } }, { waitForSeal: true });
  return t;
}

async function integrity(server: TestServer, range: { from?: string; to?: string } = {}): Promise<Report> {
  const answer = await postGraphQL<{ auditIntegrity: Report }>(
    server.url,
    server.adminKey,
    'query($from: DateTimeISO, $to: DateTimeISO) { auditIntegrity(from: $from, to: $to) { ok checkedEvents firstInvalidEventId headHash problem } }',
    range,
  );
  assert.deepEqual(answer.errors, undefined);
  return answer.data!.auditIntegrity;
}

const asSuperuser = (server: TestServer, statement: string) =>
  server.db.query(`SET session_replication_role = replica; ${statement}; RESET session_replication_role`);
const lastIds = async (server: TestServer, n: number) =>
  (await server.db.query<{ id: string }>(`SELECT id::text FROM audit_events ORDER BY id DESC LIMIT ${n}`)).map((r) => r.id).reverse();

/** Six events, one of them since removed behind an anchor row added by hand; `next` follows the gap. */
async function eventRemovedBehindHandMadeAnchor(): Promise<{ server: TestServer; next: string }> {
  const server = await serverWithEvents(6);
  const [removed, next] = await lastIds(server, 4);
  await asSuperuser(
    server,
    `INSERT INTO audit_chain_anchors (last_id, hash, removed_before, removed_events) SELECT id, hash, '2026-01-01', 1 FROM audit_events WHERE id = ${removed};
     DELETE FROM audit_events WHERE id = ${removed}`,
  );
  return { server, next: next! };
}

test('an intact log verifies, whole or by range, and says nothing is wrong', async () => {
  const server = await serverWithEvents(5);
  const whole = await integrity(server);
  assert.deepEqual([whole.ok, whole.problem, whole.firstInvalidEventId], [true, null, null]);
  const [head] = await server.db.query<{ hash: string }>('SELECT hash FROM audit_chain_head');
  assert.equal(whole.headHash, head!.hash);
  const recent = await integrity(server, { from: new Date(Date.now() - 600_000).toISOString() });
  assert.equal(recent.ok, true, JSON.stringify(recent));
});

test('events cut off the end of the log are reported: the chain head names an event the log no longer holds', async () => {
  const server = await serverWithEvents(5);
  const [, , headId] = await lastIds(server, 3);
  const [keptId] = await lastIds(server, 3);
  await asSuperuser(server, `DELETE FROM audit_events WHERE id > ${keptId}`);
  const report = await integrity(server);
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, headId);
  assert.match(report.problem!, /missing/);
  // A range running to the present sees it too, even one that now holds no event at all.
  assert.equal((await integrity(server, { from: new Date(Date.now() - 600_000).toISOString() })).ok, false);
  await asSuperuser(server, `DELETE FROM audit_events WHERE occurred_at > now() - interval '10 minutes'`);
  const [head] = await server.db.query<{ id: string }>('SELECT last_id::text AS id FROM audit_chain_head');
  const empty = await integrity(server, { from: new Date(Date.now() - 600_000).toISOString() });
  assert.deepEqual([empty.ok, empty.firstInvalidEventId], [false, head!.id]);
});

test('an anchor added by hand bridges nothing: an event removed from the middle is reported at the event after it', async () => {
  const { server, next } = await eventRemovedBehindHandMadeAnchor();
  const report = await integrity(server);
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, next);
  assert.match(report.problem!, /no audit\.retention event accounts for/);
});

test('counts that disagree with the events are reported, however they were changed', async () => {
  const server = await serverWithEvents(4);
  // The server's own database role may write the rollups: no trigger stands in the way here.
  await server.db.query(`UPDATE audit_counts_hourly SET count = count - 1 WHERE action = 'test.event'`);
  const hourly = await integrity(server);
  assert.equal(hourly.ok, false);
  assert.equal(hourly.firstInvalidEventId, null, 'no event is at fault');
  assert.match(hourly.problem!, /hour from .* counts 3 test\.event events, the log holds 4/);
  await server.db.query(`UPDATE audit_counts_hourly SET count = count + 1 WHERE action = 'test.event'`);
  assert.equal((await integrity(server)).ok, true, 'put back, the counts agree again');
  await server.db.query(`DELETE FROM audit_counts_daily WHERE action = 'test.event'`);
  const daily = await integrity(server);
  assert.equal(daily.ok, false);
  assert.match(daily.problem!, /day from .* counts 0 test\.event events, the log holds 4/);
});

test('a ranged check reports an event of the range whose time was moved out of it', async () => {
  const server = await serverWithEvents(5);
  const [moved] = await lastIds(server, 3);
  const from = new Date(Date.now() - 600_000).toISOString();
  await asSuperuser(server, `UPDATE audit_events SET occurred_at = '2020-01-01' WHERE id = ${moved}`);
  const report = await integrity(server, { from, to: new Date(Date.now() + 60_000).toISOString() });
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, moved);
});

test('a ranged check reports a moved event at the very edge of the range too', async () => {
  const server = await serverWithEvents(5);
  const [newest] = await lastIds(server, 1);
  await asSuperuser(server, `UPDATE audit_events SET occurred_at = '2020-01-01' WHERE id = ${newest}`);
  const report = await integrity(server, { from: new Date(Date.now() - 600_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, newest);
});

test('a retention event forged outside the chain accounts for nothing', async () => {
  const server = await serverWithEvents(6);
  const [removed] = await lastIds(server, 4);
  const [row] = await server.db.query<{ hash: string }>(`SELECT hash FROM audit_events WHERE id = ${removed}`);
  // A well-formed audit.retention event naming the anchor, hashed as the server would, but above the head.
  const forged = {
    id: '9000000000000000000',
    occurredAt: new Date(),
    action: 'audit.retention',
    outcome: AuditOutcome.SUCCESS,
    actorType: ActorType.SYSTEM,
    actorId: null,
    actorKeyId: null,
    targetType: 'audit',
    targetId: null,
    ip: null,
    userAgent: null,
    requestId: null,
    details: { anchors: [{ lastId: removed!, hash: row!.hash }] },
    prevHash: row!.hash,
  };
  const hash = eventHash(forged);
  await asSuperuser(
    server,
    `INSERT INTO audit_chain_anchors (last_id, hash, removed_before, removed_events) VALUES (${removed}, '${row!.hash}', '2026-01-01', 1);
     DELETE FROM audit_events WHERE id = ${removed};
     INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, target_type, details, prev_hash, hash)
       VALUES (${forged.id}, '${forged.occurredAt.toISOString()}', 'audit.retention', 'SUCCESS', 'SYSTEM', 'audit', '${JSON.stringify(forged.details)}', '${row!.hash}', '${hash}')`,
  );
  const report = await integrity(server);
  assert.equal(report.ok, false);
  assert.match(report.problem!, /no audit\.retention event accounts for/);
});

test('a retention run does not carry an anchor added by hand, so it bridges nothing afterwards either', async () => {
  const { server, next } = await eventRemovedBehindHandMadeAnchor();
  // A month old enough to drop, so the run has something to do.
  await server.db.query(`SELECT keyledger_audit_partitions('2020-03-01', '2020-04-01')`);
  await server.db.query(`INSERT INTO audit_staging (occurred_at, action, outcome, actor_type) VALUES ('2020-03-15', 'old.event', 'SUCCESS', 'SYSTEM')`);
  await server.server.services.audit.seal();
  const report = await applyRetention(server.server.services.audit, new Date('2020-04-01T00:00:00Z'));
  assert.deepEqual(report.removedPartitions, ['audit_events_2020_03']);
  assert.deepEqual(report.carriedAnchors, []);
  const integrity_ = await integrity(server);
  assert.equal(integrity_.ok, false);
  assert.equal(integrity_.firstInvalidEventId, next);
});

/**
 * A copy of event `id` as the server's own role could write it, triggers on: with the fields
 * changed, linked to `prevHash`, hashed as a seal would, and counted in the rollups so that the
 * counts do not give it away.
 */
async function forgeEvent(server: TestServer, id: string, changes: Partial<AuditEventEntity>, prevHash: string): Promise<AuditEventEntity> {
  const [original] = await server.db.query<Record<string, unknown>>(
    `SELECT id::text AS id, occurred_at AS "occurredAt", action, outcome, actor_type AS "actorType", actor_id AS "actorId", actor_key_id AS "actorKeyId",
            target_type AS "targetType", target_id AS "targetId", ip, user_agent AS "userAgent", request_id AS "requestId", details, prev_hash AS "prevHash"
       FROM audit_events WHERE id = $1 LIMIT 1`,
    [id],
  );
  const event = Object.assign(new AuditEventEntity(), original, changes, { prevHash });
  event.hash = eventHash(event);
  await server.db.query(
    `INSERT INTO audit_events (id, occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type, target_id, ip, user_agent, request_id, details, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
    [event.id, event.occurredAt, event.action, event.outcome, event.actorType, event.actorId, event.actorKeyId, event.targetType, event.targetId,
      event.ip, event.userAgent, event.requestId, event.details === null ? null : JSON.stringify(event.details), event.prevHash, event.hash],
  );
  await server.db.query(rollupStatement([event]));
  return event;
}

test('an event added beyond the chain head, with every trigger on and the counts made to agree, is reported, whatever the range', async () => {
  const server = await serverWithEvents(3);
  const [first, , head] = await lastIds(server, 3);
  const [{ hash }] = await server.db.query<{ hash: string }>('SELECT hash FROM audit_events WHERE id = $1', [head]);
  // Perfectly linked to the head and dated with the first event, so a ranged check's time covers it.
  const [{ at }] = await server.db.query<{ at: Date }>('SELECT occurred_at AS at FROM audit_events WHERE id = $1', [first]);
  const forged = await forgeEvent(server, head!, { id: String(BigInt(head!) + 1000n), occurredAt: at, action: 'key.revoke', details: { forged: true } }, hash);
  for (const range of [{}, { from: new Date(at.getTime() - 60_000).toISOString(), to: new Date(at.getTime() + 60_000).toISOString() }]) {
    const report = await integrity(server, range);
    assert.equal(report.ok, false, JSON.stringify(range));
    assert.equal(report.firstInvalidEventId, forged.id);
    assert.match(report.problem!, /beyond the chain head/);
  }
});

test('an id the log holds twice is reported at that id, and the export carries both rows', async () => {
  const server = await serverWithEvents(5);
  const ids = await lastIds(server, 5);
  const prevOf = async (id: string) => (await server.db.query<{ p: string }>('SELECT prev_hash AS p FROM audit_events WHERE id = $1', [id]))[0]!.p;
  const at = async (id: string) => (await server.db.query<{ at: Date }>('SELECT occurred_at AS at FROM audit_events WHERE id = $1', [id]))[0]!.at;
  // A twin of the third event hashed over what it links to, a millisecond apart (the key is (id, occurred_at)),
  // and a twin of the last, which is where the export's read batch ends.
  await forgeEvent(server, ids[2]!, { occurredAt: new Date((await at(ids[2]!)).getTime() + 1), details: { i: 'forged' } }, await prevOf(ids[2]!));
  await forgeEvent(server, ids[4]!, { occurredAt: new Date((await at(ids[4]!)).getTime() + 1), details: { i: 'forged' } }, await prevOf(ids[4]!));
  const report = await integrity(server);
  assert.equal(report.ok, false);
  assert.equal(report.firstInvalidEventId, ids[2]);
  assert.match(report.problem!, /more than once/);
  const [upTo] = await server.db.query<{ n: number }>('SELECT count(DISTINCT id)::int AS n FROM audit_events WHERE id <= $1', [ids[2]]);
  assert.equal(report.checkedEvents, upTo!.n, 'checked up to and including the reported event, as for any other failure');

  const exported = await fetch(`${server.baseUrl}/audit/export?format=ndjson`, { headers: { authorization: `Bearer ${server.adminKey}` } });
  assert.equal(exported.status, 200);
  const lines = (await exported.text()).trim().split('\n').map((line) => JSON.parse(line) as { id: string; details: { i?: unknown } | null });
  for (const id of [ids[2], ids[4]]) {
    assert.deepEqual(lines.filter((line) => line.id === id).map((line) => line.details?.i === 'forged').sort(), [false, true], `both rows of event ${id}`);
  }
});

test("a ranged check's headHash is the hash of the range's last event, the one an export of that range ends with", async () => {
  const server = await serverWithEvents(5);
  const ids = await lastIds(server, 5);
  const at = async (id: string) => (await server.db.query<{ at: Date }>('SELECT occurred_at AS at FROM audit_events WHERE id = $1', [id]))[0]!.at.toISOString();
  const range = { from: await at(ids[1]!), to: await at(ids[3]!) };
  const report = await integrity(server, range);
  assert.equal(report.ok, true, JSON.stringify(report));
  const exported = await fetch(`${server.baseUrl}/audit/export?format=ndjson&from=${range.from}&to=${range.to}`, { headers: { authorization: `Bearer ${server.adminKey}` } });
  const lines = (await exported.text()).trim().split('\n').map((line) => JSON.parse(line) as { id: string; hash: string });
  assert.ok(lines.length > 0 && lines.every((line) => BigInt(line.id) < BigInt(ids[3]!)), 'the export holds the range only');
  assert.equal(report.headHash, lines.at(-1)!.hash);
});
