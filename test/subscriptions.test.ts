import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { generateKey } from '../src/auth/key-format';
import {
  SubAlertRaisedDocument,
  SubAuditEventRecordedDocument,
  SubAuditPageDocument,
  SubCreateKeyDocument,
  SubCreateRoleDocument,
  SubCreateUserDocument,
  SubDisableUserDocument,
  SubRevokeKeyDocument,
  SubRolesDocument,
  SubUpdateRoleDocument,
  SubUsersDocument,
  SubVerifyDocument,
  SubViewerDocument,
  type AlertFilter,
  type AuditEventFilter,
  type CreateApiKeyInput,
  type SubAlertRaisedSubscription,
  type SubAuditEventRecordedSubscription,
  type SubAuditPageQuery,
} from './generated/graphql';
import { Cluster, redisForTests, sleep, stopProcess, type Instance } from './helpers/cluster';
import { createTestDatabase, type TestDatabase } from './helpers/database';
import { postGraphQL, startTestServer, type TestServer } from './helpers/server';

/**
 * Live streams over graphql-ws: Subscription.alertRaised and Subscription.auditEventRecorded.
 * Filters are applied on the server, permissions are checked per operation, a key that stops
 * verifying loses its socket (4403), delivery crosses instances, and a slow reader holds nobody up.
 */

type Alert = SubAlertRaisedSubscription['alertRaised'];
type AuditNode = SubAuditEventRecordedSubscription['auditEventRecorded'];
type ErrorShape = { message: string; extensions?: Record<string, unknown> };
type CloseInfo = { code: number; reason: string; at: number };

/** Either an in-process test server or a server process of the cluster. */
interface Api {
  url: string;
  ok<T, V>(key: string, document: TypedDocumentNode<T, V>, variables?: V): Promise<T>;
}

const unique = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

// ---------------------------------------------------------------------------------------------
// Connections and streams

/** Every client and raw socket opened by this file, so after() can close what a failed test left open. */
const openClients: Client[] = [];
const openSockets: WebSocket[] = [];

interface Connection {
  client: Client;
  /** Set once the socket closed (by the server or by dispose) */
  closed: CloseInfo | null;
  whenClosed: Promise<CloseInfo>;
  /** How many times the socket connected (acknowledged): must stay 1 for "the same connection" */
  connects: number;
}

/**
 * An eager graphql-ws client (lazy: false): it connects once and keeps that one socket whether or
 * not an operation is running, so "the connection stays usable" really means the same socket.
 */
function connect(url: string, key: string): Connection {
  let resolveClosed!: (info: CloseInfo) => void;
  const connection: Connection = {
    client: null as unknown as Client,
    closed: null,
    whenClosed: new Promise((resolve) => (resolveClosed = resolve)),
    connects: 0,
  };
  connection.client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${key}` },
    lazy: false,
    retryAttempts: 0,
    onNonLazyError: () => {},
    on: {
      connected: () => connection.connects++,
      closed: (event) => {
        const { code, reason } = event as { code: number; reason: string };
        if (connection.closed) return;
        connection.closed = { code, reason: String(reason), at: performance.now() };
        resolveClosed(connection.closed);
      },
    },
  });
  openClients.push(connection.client);
  return connection;
}

async function connected(connection: Connection, timeoutMs = 5000): Promise<void> {
  await waitUntil(() => connection.connects > 0 || connection.closed !== null, timeoutMs, 'the WebSocket connection is acknowledged');
  assert.equal(connection.closed, null, `the connection was closed: ${JSON.stringify(connection.closed)}`);
}

/** One running subscription: what it delivered (with arrival times), its errors, and whether it ended. */
class Stream<T> {
  readonly items: Array<{ value: T; at: number }> = [];
  readonly errors: ErrorShape[] = [];
  completed = false;
  /** A non-GraphQL error: the close event when the socket went away */
  failure: unknown = null;
  readonly stop: () => void;

  constructor(client: Client, query: string, variables: Record<string, unknown> | undefined, pick: (data: Record<string, unknown>) => T) {
    this.stop = client.subscribe<Record<string, unknown>>(
      { query, variables },
      {
        next: (result) => {
          if (result.errors) this.errors.push(...(result.errors as ErrorShape[]));
          if (result.data) this.items.push({ value: pick(result.data), at: performance.now() });
        },
        error: (error) => {
          if (Array.isArray(error)) this.errors.push(...(error as ErrorShape[]));
          else this.failure = error;
        },
        complete: () => (this.completed = true),
      },
    );
  }

  get values(): T[] {
    return this.items.map((i) => i.value);
  }

  /** Waits until an item matching `predicate` arrived; returns it and when it arrived. */
  async first(predicate: (value: T) => boolean, timeoutMs: number, what: string): Promise<{ value: T; at: number }> {
    await waitUntil(
      () => this.items.some((i) => predicate(i.value)) || this.failure !== null,
      timeoutMs,
      () => `${what} (received ${this.items.length}: ${JSON.stringify(this.values).slice(0, 600)}; errors ${JSON.stringify(this.errors)})`,
    );
    const found = this.items.find((i) => predicate(i.value));
    assert.ok(found, `${what}: the stream failed first: ${JSON.stringify(this.failure)}`);
    return found;
  }

  /** Waits until the operation ended with errors (an error on this operation only). */
  async refused(timeoutMs = 3000): Promise<ErrorShape[]> {
    await waitUntil(() => this.errors.length > 0 || this.failure !== null, timeoutMs, 'the operation is answered with an error');
    assert.equal(this.failure, null, `the socket must not be closed: ${JSON.stringify(this.failure)}`);
    return this.errors;
  }
}

function alerts(client: Client, filter?: AlertFilter | null): Stream<Alert> {
  return new Stream(client, print(SubAlertRaisedDocument), filter === undefined ? undefined : { filter }, (d) => d.alertRaised as Alert);
}

function auditTail(client: Client, filter?: AuditEventFilter | null): Stream<AuditNode> {
  return new Stream(client, print(SubAuditEventRecordedDocument), filter === undefined ? undefined : { filter }, (d) => d.auditEventRecorded as AuditNode);
}

/** Runs one query or mutation over the connection to completion. */
function execute<T>(client: Client, query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: ErrorShape[] }> {
  return new Promise((resolve, reject) => {
    let result: { data?: T; errors?: ErrorShape[] } = {};
    client.subscribe<T>(
      { query, variables },
      {
        next: (value) => (result = value as typeof result),
        error: (error) => (Array.isArray(error) ? resolve({ errors: error as ErrorShape[] }) : reject(error)),
        complete: () => resolve(result),
      },
    );
  });
}

async function viewerOver(connection: Connection): Promise<{ userId: string; keyId: string }> {
  const result = await execute<{ viewer: { user: { id: string }; key: { id: string } } }>(connection.client, '{ viewer { user { id } key { id } } }');
  assert.equal(result.errors, undefined, `viewer over the same connection: ${JSON.stringify(result.errors)}`);
  return { userId: result.data!.viewer.user.id, keyId: result.data!.viewer.key.id };
}

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string | (() => string)): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await condition()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) assert.fail(`not within ${timeoutMs} ms: ${typeof what === 'function' ? what() : what}`);
    await sleep(10);
  }
}

function codes(errors: ErrorShape[]): string[] {
  return errors.map((e) => String(e.extensions?.code));
}

// ---------------------------------------------------------------------------------------------
// Fixtures (as admin, through HTTP)

async function roleIdsOf(api: Api, adminKey: string): Promise<Map<string, string>> {
  return new Map((await api.ok(adminKey, SubRolesDocument)).roles.map((r) => [r.name, r.id]));
}

async function createUser(api: Api, adminKey: string, roleIds: string[], label: string): Promise<string> {
  const name = unique(label);
  return (await api.ok(adminKey, SubCreateUserDocument, { input: { name, email: `${name}@example.test`, roleIds } })).createUser.id;
}

interface Key {
  id: string;
  secret: string;
  name: string;
}

async function createKey(api: Api, adminKey: string, ownerId: string, extra: Partial<CreateApiKeyInput> = {}): Promise<Key> {
  const created = (await api.ok(adminKey, SubCreateKeyDocument, { input: { ownerId, name: unique('key'), permissions: ['*'], ...extra } })).createApiKey;
  return { id: created.apiKey.id, secret: created.secret, name: created.apiKey.name };
}

interface Principal {
  userId: string;
  key: Key;
}

async function principal(api: Api, adminKey: string, roleIds: string[], label: string): Promise<Principal> {
  const userId = await createUser(api, adminKey, roleIds, label);
  return { userId, key: await createKey(api, adminKey, userId) };
}

async function revoke(api: Api, adminKey: string, keyId: string, reason = 'subscription test'): Promise<void> {
  const revoked = await api.ok(adminKey, SubRevokeKeyDocument, { id: keyId, reason });
  assert.equal(revoked.revokeApiKey.status, 'REVOKED');
}

async function verify(api: Api, adminKey: string, secret: string): Promise<string> {
  return (await api.ok(adminKey, SubVerifyDocument, { input: { key: secret } })).verifyKey.code;
}

/** A fresh key of `ownerId`, revoked, then presented: REVOKED_KEY_USED (HIGH) for that key. */
async function raiseRevokedKeyUsed(api: Api, adminKey: string, ownerId: string, verifyOn: Api = api): Promise<Key> {
  const key = await createKey(api, adminKey, ownerId);
  await revoke(api, adminKey, key.id);
  assert.equal(await verify(verifyOn, adminKey, key.secret), 'REVOKED');
  return key;
}

// ---------------------------------------------------------------------------------------------
// One in-process server for everything but the cluster

let t: TestServer;
let adminUserId: string;
let roles: Map<string, string>;
let alertsOnlyRole: string;
let member: Principal;
let auditor: Principal;
let alertsOnly: Principal;

const feeds = () => t.server.services.alerting;

/** Waits until the server has registered `count` more subscribers on the feed than `base`. */
async function registered(kind: 'alertFeed' | 'auditFeed', base: number, count: number): Promise<void> {
  await waitUntil(() => feeds()[kind].size >= base + count, 3000, () => `${count} ${kind} subscriber(s) registered (size ${feeds()[kind].size}, base ${base})`);
}

before(async () => {
  // Room for the per-key limits' tests to reach those limits: the per-server bound has its own tests.
  t = await startTestServer({ maxAuditTails: 1000 });
  adminUserId = (await t.ok(t.adminKey, SubViewerDocument)).viewer.user.id;
  roles = await roleIdsOf(t, t.adminKey);
  alertsOnlyRole = (await t.ok(t.adminKey, SubCreateRoleDocument, { input: { name: unique('alerts-only'), permissions: ['alerts:read'] } })).createRole.id;
  member = await principal(t, t.adminKey, [roles.get('member')!], 'member');
  auditor = await principal(t, t.adminKey, [roles.get('auditor')!], 'auditor');
  alertsOnly = await principal(t, t.adminKey, [alertsOnlyRole], 'alerts-only');
});

after(async () => {
  await Promise.allSettled(openClients.map((c) => c.dispose()));
  for (const socket of openSockets) socket.terminate();
  await t?.close();
});

describe('alertRaised', () => {
  test('delivers a new alert with its fields within 2 s; a repeat of the same cause is not delivered again', async () => {
    const admin = connect(t.url, t.adminKey);
    await connected(admin);
    const base = feeds().alertFeed.size;
    const stream = alerts(admin.client);
    await registered('alertFeed', base, 1);

    const ownerId = await createUser(t, t.adminKey, [], 'leaker');
    const key = await raiseRevokedKeyUsed(t, t.adminKey, ownerId);
    const verifiedAt = performance.now();
    const { value: alert, at } = await stream.first((a) => a.key?.id === key.id, 2000, 'the REVOKED_KEY_USED alert of the presented key');
    assert.ok(at - verifiedAt <= 2000, `delivered ${(at - verifiedAt).toFixed(0)} ms after the verification`);
    assert.equal(alert.type, 'REVOKED_KEY_USED');
    assert.equal(alert.severity, 'HIGH');
    assert.equal(alert.status, 'OPEN');
    assert.deepEqual(alert.key, { id: key.id, name: key.name });
    assert.equal(alert.user?.id, ownerId);
    assert.ok(alert.message.includes(key.name), `the message names the key: ${alert.message}`);
    assert.equal(alert.details?.code, 'REVOKED', `details: ${JSON.stringify(alert.details)}`);
    assert.ok(!Number.isNaN(Date.parse(alert.createdAt)));
    const [stored] = await t.db.query<{ id: string; type: string }>('SELECT id, type FROM alerts WHERE key_id = $1', [key.id]);
    assert.equal(alert.id, stored?.id, 'the delivered alert is the stored one');

    // The same cause again: folded into the open alert, not a new one.
    assert.equal(await verify(t, t.adminKey, key.secret), 'REVOKED');
    assert.equal(await verify(t, t.adminKey, key.secret), 'REVOKED');
    // A different key afterwards is a new alert: once it is in, the repeats had every chance to arrive before it.
    const other = await raiseRevokedKeyUsed(t, t.adminKey, ownerId);
    await stream.first((a) => a.key?.id === other.id, 2000, 'the alert of a second revoked key');
    await sleep(300);
    assert.equal(stream.values.filter((a) => a.key?.id === key.id).length, 1, 'the repeated cause was delivered once');
    const [{ count }] = (await t.db.query<{ count: number }>('SELECT count(*)::int AS count FROM alerts WHERE key_id = $1', [key.id])) as [{ count: number }];
    assert.equal(count, 1);
    assert.deepEqual(stream.errors, []);
    assert.equal(admin.closed, null);
    stream.stop();
  });

  test('every AlertFilter field filters on the server', async () => {
    const highOwner = await createUser(t, t.adminKey, [], 'high-owner');
    const lowOwner = await createUser(t, t.adminKey, [], 'low-owner');
    // EXPIRED_KEY_USED (LOW) needs a key that expires: created now, presented once it has.
    const expiresAt = new Date(Date.now() + 1500);
    const expiring = await createKey(t, t.adminKey, lowOwner, { expiresAt: expiresAt.toISOString() });
    const revokedKey = await createKey(t, t.adminKey, highOwner);
    await revoke(t, t.adminKey, revokedKey.id);

    const admin = connect(t.url, t.adminKey);
    await connected(admin);
    const filters: Record<string, AlertFilter | null> = {
      none: null,
      types: { types: ['EXPIRED_KEY_USED'] },
      minSeverity: { minSeverity: 'MEDIUM' },
      keyId: { keyId: expiring.id },
      userId: { userId: highOwner },
      open: { status: 'OPEN' },
      acknowledged: { status: 'ACKNOWLEDGED' },
    };
    const base = feeds().alertFeed.size;
    const streams = Object.fromEntries(Object.entries(filters).map(([name, filter]) => [name, alerts(admin.client, filter)])) as Record<string, Stream<Alert>>;
    await registered('alertFeed', base, Object.keys(filters).length);

    await sleep(Math.max(0, expiresAt.getTime() - Date.now() + 100));
    assert.equal(await verify(t, t.adminKey, expiring.secret), 'EXPIRED');
    assert.equal(await verify(t, t.adminKey, revokedKey.secret), 'REVOKED');

    const isHigh = (a: Alert) => a.type === 'REVOKED_KEY_USED' && a.key?.id === revokedKey.id;
    const isLow = (a: Alert) => a.type === 'EXPIRED_KEY_USED' && a.key?.id === expiring.id;
    const high = (await streams.none!.first(isHigh, 2000, 'REVOKED_KEY_USED on the unfiltered stream')).value;
    const low = (await streams.none!.first(isLow, 2000, 'EXPIRED_KEY_USED on the unfiltered stream')).value;
    assert.equal(high.severity, 'HIGH');
    assert.equal(low.severity, 'LOW');
    assert.equal(low.user?.id, lowOwner);
    // Every subscriber was handed the alerts in the same pass: give the filtered ones a moment to drain.
    await sleep(400);

    const rank = { INFO: 0, LOW: 1, MEDIUM: 2, HIGH: 3, CRITICAL: 4 } as const;
    const expectations: Record<string, { matches: (a: Alert) => boolean; high: boolean; low: boolean }> = {
      none: { matches: () => true, high: true, low: true },
      types: { matches: (a) => a.type === 'EXPIRED_KEY_USED', high: false, low: true },
      minSeverity: { matches: (a) => rank[a.severity] >= rank.MEDIUM, high: true, low: false },
      keyId: { matches: (a) => a.key?.id === expiring.id, high: false, low: true },
      userId: { matches: (a) => a.user?.id === highOwner, high: true, low: false },
      open: { matches: (a) => a.status === 'OPEN', high: true, low: true },
      acknowledged: { matches: (a) => a.status === 'ACKNOWLEDGED', high: false, low: false },
    };
    const unfilteredIds = new Set(streams.none!.values.map((a) => a.id));
    for (const [name, expected] of Object.entries(expectations)) {
      const stream = streams[name]!;
      assert.deepEqual(stream.errors, [], `${name}: no errors`);
      const got = stream.values;
      const summary = JSON.stringify(got.map((a) => `${a.type}/${a.severity}/${a.key?.id}`));
      for (const alert of got) {
        assert.ok(expected.matches(alert), `${name} (${JSON.stringify(filters[name])}) delivered a non-matching alert ${alert.type}/${alert.severity}/${alert.status}: ${summary}`);
        assert.ok(unfilteredIds.has(alert.id), `${name}: ${alert.id} is a real alert (also on the unfiltered stream)`);
      }
      assert.equal(got.filter(isHigh).length, expected.high ? 1 : 0, `${name}: REVOKED_KEY_USED HIGH ${expected.high ? 'delivered once' : 'not delivered'}: ${summary}`);
      assert.equal(got.filter(isLow).length, expected.low ? 1 : 0, `${name}: EXPIRED_KEY_USED LOW ${expected.low ? 'delivered once' : 'not delivered'}: ${summary}`);
    }
    assert.equal(streams.acknowledged!.items.length, 0, 'a new alert is OPEN: nothing for status ACKNOWLEDGED');
    for (const stream of Object.values(streams)) stream.stop();
  });
});

describe('auditEventRecorded', () => {
  test('actions (prefixes), actorId, actorKeyId, targetId, targetType, outcome, detailsContains, ip/CIDR and from/to filters apply on the server', async () => {
    const target = await createKey(t, t.adminKey, adminUserId);
    const other = await createKey(t, t.adminKey, adminUserId);
    const reason = unique('reason');
    const admin = connect(t.url, t.adminKey);
    await connected(admin);
    const past = new Date(Date.now() - 3600_000).toISOString();
    const future = new Date(Date.now() + 3600_000).toISOString();
    const filters: Record<string, AuditEventFilter> = {
      keys: { actions: ['key.*'] },
      actor: { actorId: member.userId },
      actorKey: { actorKeyId: member.key.id },
      target: { targetId: target.id },
      targetType: { targetType: 'user' },
      denied: { outcome: 'DENIED' },
      details: { detailsContains: { reason } },
      loopback: { ip: '127.0.0.0/8' },
      exactIp: { ip: '127.0.0.1', actions: ['user.create'] },
      tenNet: { ip: '10.0.0.0/8' },
      window: { from: past, to: future, actions: ['user.create'] },
      ended: { to: past },
      later: { from: future },
    };
    const base = feeds().auditFeed.size;
    const s = Object.fromEntries(Object.entries(filters).map(([name, filter]) => [name, auditTail(admin.client, filter)])) as Record<string, Stream<AuditNode>>;
    await registered('auditFeed', base, Object.keys(filters).length);

    const createdUser = await createUser(t, t.adminKey, [], 'audited'); // user.create by admin
    const adminKeyCreate = await createKey(t, t.adminKey, createdUser); // key.create by admin
    await revoke(t, t.adminKey, target.id, reason); // key.revoke of target, with the reason
    await revoke(t, t.adminKey, other.id, unique('other-reason')); // key.revoke, another reason
    const denied = await t.request(member.key.secret, SubUsersDocument); // authz.denied by member
    assert.equal(denied.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    const own = await t.ok(member.key.secret, SubCreateKeyDocument, { input: { name: unique('own') } }); // key.create by member
    const ownKeyId = own.createApiKey.apiKey.id;

    const keyCreate = (id: string) => (e: AuditNode) => e.action === 'key.create' && e.targetId === id;
    const userCreate = (e: AuditNode) => e.action === 'user.create' && e.targetId === createdUser;
    const revokeOf = (id: string) => (e: AuditNode) => e.action === 'key.revoke' && e.targetId === id;
    const deniedUsers = (e: AuditNode) => e.action === 'authz.denied' && e.actor?.id === member.userId && e.details?.operation === 'Query.users';

    await s.keys!.first(keyCreate(adminKeyCreate.id), 2000, 'key.* sees key.create');
    await s.keys!.first(revokeOf(target.id), 2000, 'key.* sees key.revoke');
    await s.keys!.first(revokeOf(other.id), 2000, 'key.* sees the other key.revoke');
    await s.keys!.first(keyCreate(ownKeyId), 2000, "key.* sees the member's key.create");
    await s.actor!.first(deniedUsers, 2000, "actorId sees the member's authz.denied");
    await s.actor!.first(keyCreate(ownKeyId), 2000, "actorId sees the member's key.create");
    await s.actorKey!.first(deniedUsers, 2000, "actorKeyId sees the member key's authz.denied");
    await s.actorKey!.first(keyCreate(ownKeyId), 2000, "actorKeyId sees the member key's key.create");
    await s.target!.first(revokeOf(target.id), 2000, 'targetId sees the revocation of its target');
    await s.targetType!.first(userCreate, 2000, 'targetType user sees user.create');
    await s.exactIp!.first(userCreate, 2000, 'a single address (127.0.0.1) sees user.create');
    await s.window!.first(userCreate, 2000, 'from an hour ago to in an hour sees user.create');
    const deniedEvent = (await s.denied!.first(deniedUsers, 2000, 'outcome DENIED sees authz.denied')).value;
    assert.equal(deniedEvent.outcome, 'DENIED');
    await s.details!.first(revokeOf(target.id), 2000, 'detailsContains sees the event with that reason');
    const local = (await s.loopback!.first(userCreate, 2000, '127.0.0.0/8 sees events from 127.0.0.1')).value;
    assert.equal(local.ip, '127.0.0.1');
    await s.loopback!.first(deniedUsers, 2000, '127.0.0.0/8 sees the denial from 127.0.0.1');
    await sleep(400);

    const inLoopback = (ip: string | null | undefined) => typeof ip === 'string' && /^127\.\d+\.\d+\.\d+$/.test(ip);
    const rules: Record<string, { matches: (e: AuditNode) => boolean; absent: Array<[string, (e: AuditNode) => boolean]> }> = {
      keys: { matches: (e) => e.action.startsWith('key.'), absent: [['user.create', userCreate], ['authz.denied', deniedUsers]] },
      actor: { matches: (e) => e.actor?.id === member.userId, absent: [["admin's key.create", keyCreate(adminKeyCreate.id)], ["admin's user.create", userCreate]] },
      actorKey: { matches: (e) => e.actorKey?.id === member.key.id, absent: [["admin's key.create", keyCreate(adminKeyCreate.id)]] },
      target: { matches: (e) => e.targetId === target.id, absent: [['the other revocation', revokeOf(other.id)]] },
      targetType: { matches: (e) => e.targetType === 'user', absent: [['key.revoke', revokeOf(target.id)]] },
      denied: { matches: (e) => e.outcome === 'DENIED', absent: [['key.revoke', revokeOf(target.id)], ['user.create', userCreate]] },
      details: { matches: (e) => e.details?.reason === reason, absent: [['the other revocation', revokeOf(other.id)]] },
      loopback: { matches: (e) => inLoopback(e.ip), absent: [] },
      exactIp: { matches: (e) => e.ip === '127.0.0.1' && e.action === 'user.create', absent: [] },
      tenNet: { matches: () => false, absent: [['user.create from 127.0.0.1', userCreate]] },
      window: { matches: (e) => e.action === 'user.create', absent: [] },
      ended: { matches: () => false, absent: [['user.create', userCreate]] },
      later: { matches: () => false, absent: [['user.create', userCreate]] },
    };
    for (const [name, rule] of Object.entries(rules)) {
      const stream = s[name]!;
      assert.deepEqual(stream.errors, [], `${name}: no errors`);
      for (const event of stream.values) {
        assert.ok(rule.matches(event), `${name} (${JSON.stringify(filters[name])}) delivered a non-matching event: ${JSON.stringify(event)}`);
      }
      for (const [what, predicate] of rule.absent) assert.ok(!stream.values.some(predicate), `${name} must not see ${what}`);
    }
    assert.equal(s.tenNet!.items.length, 0, 'nothing came from 10.0.0.0/8');
    assert.equal(s.ended!.items.length, 0, 'a tail whose `to` is past gets nothing');
    assert.equal(s.later!.items.length, 0, 'a tail whose `from` is in an hour gets nothing yet');
    for (const stream of Object.values(s)) stream.stop();
  });

  test('a filter-less tail gets every event once, in id order, without gaps, while several writers write at once', async () => {
    const admin = connect(t.url, t.adminKey);
    await connected(admin);
    const base = feeds().auditFeed.size;
    const tail = auditTail(admin.client);
    await registered('auditFeed', base, 1);

    const writers = Array.from({ length: 6 }, async (_, w) => {
      for (let i = 0; i < 15; i++) {
        if (i % 3 === 2) await t.ok(t.adminKey, SubCreateRoleDocument, { input: { name: unique(`w${w}-role`), permissions: ['things:read'] } });
        else await createUser(t, t.adminKey, [], `w${w}-user`);
      }
    });
    // A member's refusals and its own keys in between: another actor, another key.
    writers.push(
      (async () => {
        for (let i = 0; i < 5; i++) {
          await t.request(member.key.secret, SubUsersDocument);
          await t.ok(member.key.secret, SubCreateKeyDocument, { input: { name: unique('m') } });
        }
      })(),
    );
    await Promise.all(writers);
    const marker = await createUser(t, t.adminKey, [], 'marker');
    const markerEvent = (await tail.first((e) => e.action === 'user.create' && e.targetId === marker, 3000, 'the marker event')).value;

    const received = tail.values.filter((e) => BigInt(e.id) <= BigInt(markerEvent.id));
    assert.ok(received.length >= 6 * 15 + 10 + 1, `received ${received.length} events`);
    const firstId = BigInt(received[0]!.id);

    const stored: Array<{ id: string; action: string; targetId?: string | null; hash: string }> = [];
    let after: string | null | undefined = null;
    for (;;) {
      const page: SubAuditPageQuery['auditEvents'] = (await t.ok(t.adminKey, SubAuditPageDocument, { first: 500, after, order: 'ASC' })).auditEvents;
      stored.push(...page.nodes);
      if (!page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor;
    }
    const expected = stored.filter((e) => BigInt(e.id) >= firstId && BigInt(e.id) <= BigInt(markerEvent.id));
    assert.deepEqual(
      received.map((e) => e.id),
      expected.map((e) => e.id),
      'the tail delivered exactly the stored events from its first one to the marker, in id order, none twice',
    );
    assert.deepEqual(
      received.map((e) => [e.action, e.hash]),
      expected.map((e) => [e.action, e.hash]),
      'and they are the same events',
    );
    assert.deepEqual(tail.errors, []);
    tail.stop();
  });
});

describe('permissions on subscriptions', () => {
  async function deniedEvents(userId: string, operation: string): Promise<number> {
    const rows = await t.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE action = 'authz.denied' AND outcome = 'DENIED' AND actor_id = $1 AND details->>'operation' = $2`,
      [userId, operation],
    );
    return rows[0]!.n;
  }

  test('a member subscribing to alertRaised gets FORBIDDEN on that operation, audited; its connection stays usable', async () => {
    const connection = connect(t.url, member.key.secret);
    await connected(connection);
    const before = await deniedEvents(member.userId, 'Subscription.alertRaised');
    const alertBase = feeds().alertFeed.size;
    const stream = alerts(connection.client);
    assert.deepEqual(codes(await stream.refused()), ['FORBIDDEN']);
    assert.ok(!JSON.stringify(stream.errors).includes('stack'));
    const viewer = await viewerOver(connection);
    assert.equal(viewer.userId, member.userId);
    assert.equal(connection.connects, 1, 'the same socket all along');
    assert.equal(connection.closed, null);
    assert.equal(feeds().alertFeed.size, alertBase, 'no subscriber left registered');
    await waitUntil(async () => (await deniedEvents(member.userId, 'Subscription.alertRaised')) > before, 3000, 'an authz.denied event naming Subscription.alertRaised');
    // And the same for the audit tail.
    const tail = auditTail(connection.client);
    assert.deepEqual(codes(await tail.refused()), ['FORBIDDEN']);
    await waitUntil(async () => (await deniedEvents(member.userId, 'Subscription.auditEventRecorded')) > 0, 3000, 'an authz.denied event naming Subscription.auditEventRecorded');
    assert.equal((await viewerOver(connection)).userId, member.userId);
    assert.equal(connection.connects, 1);
  });

  test('an auditor can subscribe to both; its tail is audited as audit.query (auditEventRecorded)', async () => {
    const connection = connect(t.url, auditor.key.secret);
    await connected(connection);
    const alertBase = feeds().alertFeed.size;
    const auditBase = feeds().auditFeed.size;
    const alertStream = alerts(connection.client);
    const tail = auditTail(connection.client, { actions: ['key.*', 'user.create'] });
    await registered('alertFeed', alertBase, 1);
    await registered('auditFeed', auditBase, 1);

    const ownerId = await createUser(t, t.adminKey, [], 'auditor-sees');
    const key = await raiseRevokedKeyUsed(t, t.adminKey, ownerId);
    await alertStream.first((a) => a.key?.id === key.id && a.type === 'REVOKED_KEY_USED', 2000, "the auditor's alertRaised");
    await tail.first((e) => e.action === 'key.create' && e.targetId === key.id, 2000, "the auditor's audit tail sees key.create");
    await tail.first((e) => e.action === 'user.create' && e.targetId === ownerId, 2000, "the auditor's audit tail sees user.create");
    assert.deepEqual(alertStream.errors, []);
    assert.deepEqual(tail.errors, []);
    const rows = await t.db.query<{ details: { query?: string; filter?: { actions?: string[] } } }>(
      `SELECT details FROM audit_events WHERE action = 'audit.query' AND actor_id = $1 AND details->>'query' = 'auditEventRecorded'`,
      [auditor.userId],
    );
    assert.equal(rows.length, 1, 'one audit.query event for starting the tail');
    assert.deepEqual(rows[0]!.details.filter?.actions, ['key.*', 'user.create'], 'it records the filter');
    alertStream.stop();
    tail.stop();
  });

  test('a key with only alerts:read cannot tail the audit log (FORBIDDEN, audited) but can receive alerts', async () => {
    const connection = connect(t.url, alertsOnly.key.secret);
    await connected(connection);
    const auditBase = feeds().auditFeed.size;
    const tail = auditTail(connection.client);
    assert.deepEqual(codes(await tail.refused()), ['FORBIDDEN']);
    assert.equal(feeds().auditFeed.size, auditBase, 'no audit subscriber left registered');
    await waitUntil(async () => (await deniedEvents(alertsOnly.userId, 'Subscription.auditEventRecorded')) > 0, 3000, 'an authz.denied event naming Subscription.auditEventRecorded');

    const alertBase = feeds().alertFeed.size;
    const stream = new Stream<{ id: string; type: string }>(connection.client, 'subscription { alertRaised { id type } }', undefined, (d) => d.alertRaised as { id: string; type: string });
    await registered('alertFeed', alertBase, 1);
    const ownerId = await createUser(t, t.adminKey, [], 'alerts-only-sees');
    const key = await raiseRevokedKeyUsed(t, t.adminKey, ownerId);
    const [row] = await waitForAlertRow(key.id);
    await stream.first((a) => a.id === row.id, 2000, 'the alert on the same connection');
    assert.deepEqual(stream.errors, []);
    assert.equal(connection.connects, 1);
    stream.stop();
  });
});

// A role change re-checks open connections; a running tail then checks the new permissions per event.
test(
  'a key that loses audit:read while tailing receives no further audit events',
  async () => {
    const role = (await t.ok(t.adminKey, SubCreateRoleDocument, { input: { name: unique('narrowed'), permissions: ['alerts:read', 'audit:read'] } })).createRole.id;
    const who = await principal(t, t.adminKey, [role], 'narrowed');
    const connection = connect(t.url, who.key.secret);
    await connected(connection);
    const base = feeds().auditFeed.size;
    const tail = new Stream<{ targetId: string | null }>(
      connection.client,
      'subscription { auditEventRecorded(filter: { actions: ["user.create"] }) { targetId } }',
      undefined,
      (d) => d.auditEventRecorded as { targetId: string | null },
    );
    await registered('auditFeed', base, 1);
    const before = await createUser(t, t.adminKey, [], 'before-narrowing');
    await tail.first((e) => e.targetId === before, 2000, 'an event while the key holds audit:read');

    await t.ok(t.adminKey, SubUpdateRoleDocument, { id: role, input: { permissions: ['alerts:read'] } });
    const query = await postGraphQL(t.url, who.key.secret, '{ auditEvents(first: 1) { nodes { id } } }');
    assert.equal(query.errors?.[0]?.extensions?.code, 'FORBIDDEN', 'the narrowing is in force for a new operation');
    const afterwards = await createUser(t, t.adminKey, [], 'after-narrowing');
    await sleep(1000);
    assert.ok(
      !tail.values.some((e) => e.targetId === afterwards),
      'an event written after audit:read was removed must not reach the tail (it may end with FORBIDDEN, or the socket may close)',
    );
  },
);

async function waitForAlertRow(keyId: string): Promise<[{ id: string }]> {
  let rows: Array<{ id: string }> = [];
  await waitUntil(async () => (rows = await t.db.query<{ id: string }>('SELECT id FROM alerts WHERE key_id = $1', [keyId])).length > 0, 3000, 'the alert is stored');
  return rows as [{ id: string }];
}

test('a bad filter is BAD_USER_INPUT on that operation; the connection stays usable', async () => {
  const connection = connect(t.url, t.adminKey);
  await connected(connection);
  const alertBase = feeds().alertFeed.size;
  const auditBase = feeds().auditFeed.size;
  const bad: Array<[string, () => Stream<unknown>]> = [
    ['ip not a CIDR', () => auditTail(connection.client, { ip: '10.0.0.0/33' })],
    ['ip not an address', () => auditTail(connection.client, { ip: 'not-an-address' })],
    ['from after to', () => auditTail(connection.client, { from: '2030-01-02T00:00:00.000Z', to: '2030-01-01T00:00:00.000Z' })],
    ['a bad action pattern', () => auditTail(connection.client, { actions: ['key.%'] })],
    ['keyId not an id', () => alerts(connection.client, { keyId: 'not-an-id' })],
    ['userId not an id', () => alerts(connection.client, { userId: '12345' })],
  ];
  for (const [what, start] of bad) {
    const stream = start();
    assert.deepEqual(codes(await stream.refused()), ['BAD_USER_INPUT'], `${what}: ${JSON.stringify(stream.errors)}`);
    assert.equal(stream.items.length, 0);
  }
  assert.equal(feeds().alertFeed.size, alertBase, 'no alert subscriber left registered');
  assert.equal(feeds().auditFeed.size, auditBase, 'no audit subscriber left registered');
  const viewer = await viewerOver(connection);
  assert.equal(viewer.userId, adminUserId);
  // A good filter still starts on the same connection.
  const good = auditTail(connection.client, { actions: ['user.create'] });
  await registered('auditFeed', auditBase, 1);
  const created = await createUser(t, t.adminKey, [], 'after-bad-filters');
  await good.first((e) => e.targetId === created, 2000, 'a valid tail on the same connection');
  assert.equal(connection.connects, 1);
  assert.equal(connection.closed, null);
  good.stop();
});

describe('a connection whose key stops verifying is closed with 4403', () => {
  /** A principal that may hold alertRaised open, subscribed on its own connection; the stream is registered. */
  async function subscribedPrincipal(label: string): Promise<{ who: Principal; connection: Connection; stream: Stream<unknown> }> {
    const who = await principal(t, t.adminKey, [alertsOnlyRole], label);
    const connection = connect(t.url, who.key.secret);
    await connected(connection);
    const base = feeds().alertFeed.size;
    const stream = new Stream(connection.client, 'subscription { alertRaised { id } }', undefined, (d) => d);
    await registered('alertFeed', base, 1);
    return { who, connection, stream };
  }

  test('revokeApiKey of the connection key (over HTTP): socket closed 4403 within 1 s with only a subscription open', async (ctx) => {
    const bystander = await subscribedPrincipal('bystander');
    const { who, connection, stream } = await subscribedPrincipal('revoked-while-connected');
    await revoke(t, t.adminKey, who.key.id, 'leaked while connected');
    const answered = performance.now();
    const closed = await Promise.race([connection.whenClosed, sleep(3000).then(() => null)]);
    assert.ok(closed, 'the socket was closed');
    ctx.diagnostic(`closed ${(closed.at - answered).toFixed(0)} ms after revokeApiKey answered (${closed.code} ${closed.reason})`);
    assert.equal(closed.code, 4403);
    assert.ok(closed.at - answered <= 1000, `closed ${(closed.at - answered).toFixed(0)} ms after the revocation (limit 1000 ms)`);
    await waitUntil(() => stream.failure !== null || stream.completed, 1000, 'the subscription ended with the socket');
    // Another key's connection is untouched.
    assert.equal(bystander.connection.closed, null);
    assert.equal((await viewerOver(bystander.connection)).userId, bystander.who.userId);
  });

  test("disableUser of the key's owner: socket closed 4403 within 1 s", async (ctx) => {
    const { who, connection } = await subscribedPrincipal('disabled-while-connected');
    const disabled = await t.ok(t.adminKey, SubDisableUserDocument, { id: who.userId, reason: 'left the company' });
    assert.equal(disabled.disableUser.status, 'DISABLED');
    const answered = performance.now();
    const closed = await Promise.race([connection.whenClosed, sleep(3000).then(() => null)]);
    assert.ok(closed, 'the socket was closed');
    ctx.diagnostic(`closed ${(closed.at - answered).toFixed(0)} ms after disableUser answered`);
    assert.equal(closed.code, 4403);
    assert.ok(closed.at - answered <= 1000, `closed ${(closed.at - answered).toFixed(0)} ms after disableUser (limit 1000 ms)`);
  });
});

test('a key that expires while subscribed: the socket closes with 4403 at its expiry, and no later event reaches it', async (ctx) => {
  const userId = await createUser(t, t.adminKey, [roles.get('auditor')!], 'expiring-tail');
  const expiresAt = new Date(Date.now() + 1500);
  const key = await createKey(t, t.adminKey, userId, { expiresAt: expiresAt.toISOString() });
  const connection = connect(t.url, key.secret);
  await connected(connection);
  const base = feeds().auditFeed.size;
  const stream = auditTail(connection.client, { actions: ['role.create'] });
  await registered('auditFeed', base, 1);
  const expiryAt = performance.now() + (expiresAt.getTime() - Date.now());
  await sleep(Math.max(0, expiresAt.getTime() - Date.now() + 50));
  const roleId = (await t.ok(t.adminKey, SubCreateRoleDocument, { input: { name: unique('after-expiry'), permissions: [] } })).createRole.id;
  const closed = await Promise.race([connection.whenClosed, sleep(3000).then(() => null)]);
  assert.ok(closed, 'the socket was closed');
  ctx.diagnostic(`closed ${(closed.at - expiryAt).toFixed(0)} ms after the key expired`);
  assert.equal(closed.code, 4403);
  // The periodic re-check alone (every 10 s) would leave it open for seconds.
  assert.ok(closed.at - expiryAt <= 1000, `closed ${(closed.at - expiryAt).toFixed(0)} ms after the expiry (limit 1000 ms)`);
  assert.deepEqual(stream.values.filter((e) => e.targetId === roleId), [], 'nothing written after the expiry was delivered');
});

test('at most 100 operations run at once on one connection and 300 for one key: more are RATE_LIMITED, and the socket stays usable', { timeout: 60_000 }, async () => {
  const who = await principal(t, t.adminKey, [alertsOnlyRole], 'many-operations');
  const base = feeds().alertFeed.size;
  const connections = [connect(t.url, who.key.secret), connect(t.url, who.key.secret), connect(t.url, who.key.secret)];
  const streams: Array<Array<Stream<unknown>>> = [];
  for (const connection of connections) {
    await connected(connection);
    streams.push(Array.from({ length: 100 }, () => new Stream(connection.client, 'subscription { alertRaised { id } }', undefined, (d) => d)));
  }
  await registered('alertFeed', base, 300);
  const first = connections[0]!;
  const refused = await new Stream(first.client, 'subscription { alertRaised { id } }', undefined, (d) => d).refused();
  assert.deepEqual(codes(refused), ['RATE_LIMITED']);
  assert.match(refused[0]!.message, /one connection/);
  // A fourth connection of the same key: the key has 300 running.
  const fourth = connect(t.url, who.key.secret);
  await connected(fourth);
  const overKey = await execute(fourth.client, '{ viewer { permissions } }');
  assert.deepEqual(codes(overKey.errors ?? []), ['RATE_LIMITED']);
  assert.match(overKey.errors![0]!.message, /one key/);
  // Another key is not affected, and once one ends the connection takes another.
  assert.equal((await viewerOver(connect(t.url, member.key.secret))).userId, member.userId);
  streams[0]![0]!.stop();
  await waitUntil(() => feeds().alertFeed.size === base + 299, 3000, 'one subscription ended');
  assert.equal((await viewerOver(first)).userId, who.userId);
  assert.equal(first.closed, null);
  for (const connection of [...connections, fourth]) await connection.client.dispose();
});

/** The protocol by hand, acknowledged: every message received, and how the socket closed. */
async function rawSocket(key: string): Promise<{ socket: WebSocket; messages: Array<{ id?: string; type: string; payload?: unknown }>; closed: Promise<number> }> {
  const socket = new WebSocket(t.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  openSockets.push(socket);
  const messages: Array<{ id?: string; type: string; payload?: unknown }> = [];
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as { type: string }));
  await once(socket, 'open');
  socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } }));
  await waitUntil(() => messages.some((m) => m.type === 'connection_ack'), 3000, 'connection_ack');
  return { socket, messages, closed };
}

test('an id reused while its operation is still ending closes the socket (4409): no stream escapes the counts or outlives the socket', async () => {
  const who = await principal(t, t.adminKey, [roles.get('auditor')!], 'id-reuse');
  const base = feeds().auditFeed.size;
  const { socket, closed } = await rawSocket(who.key.secret);
  const subscribe = JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: 'subscription { auditEventRecorded { id } }' } });
  for (let i = 0; i < 50; i++) {
    socket.send(subscribe);
    socket.send(JSON.stringify({ id: 'x', type: 'complete' }));
  }
  socket.send(subscribe);
  assert.equal(await Promise.race([closed, sleep(3000).then(() => null)]), 4409);
  await waitUntil(() => feeds().auditFeed.size <= base, 3000, () => `no tail left behind (${feeds().auditFeed.size - base} more than before)`);
});

test('subscriptions started and completed at once are limited per key (RATE_LIMITED): each start is an event every tail receives', async () => {
  const who = await principal(t, t.adminKey, [roles.get('auditor')!], 'churn');
  const { socket, messages } = await rawSocket(who.key.secret);
  for (let i = 0; i < 320; i++) {
    socket.send(JSON.stringify({ id: `c${i}`, type: 'subscribe', payload: { query: 'subscription { auditEventRecorded { id } }' } }));
    socket.send(JSON.stringify({ id: `c${i}`, type: 'complete' }));
  }
  const audited = async () =>
    (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM audit_events WHERE action = 'audit.query' AND actor_key_id = $1`, [who.key.id]))[0]!.n;
  await waitUntil(async () => (await audited()) >= 300, 10_000, 'the first 300 tails started');
  // A client that completes at once hears no error: the refusals show as starts that never happened.
  await sleep(500);
  assert.equal(await audited(), 300, 'the 20 starts past the limit were refused before they were audited or fanned out');
  socket.send(JSON.stringify({ id: 'kept', type: 'subscribe', payload: { query: 'subscription { auditEventRecorded { id } }' } }));
  await waitUntil(() => messages.some((m) => m.id === 'kept' && m.type === 'error'), 3000, 'the next start is answered with an error');
  const refusal = JSON.stringify(messages.find((m) => m.id === 'kept')!.payload);
  assert.match(refusal, /RATE_LIMITED/);
  assert.match(refusal, /subscriptions may start/);
  socket.terminate();
});

test('a key cut off by a later rotation of its successor loses its socket at once', async (ctx) => {
  const userId = await createUser(t, t.adminKey, [roles.get('auditor')!], 'rotated-line');
  const first = await createKey(t, t.adminKey, userId);
  const rotate = 'mutation($id: ID!, $grace: Int) { rotateApiKey(id: $id, gracePeriodSeconds: $grace) { apiKey { id } secret } }';
  const second = await postGraphQL<{ rotateApiKey: { apiKey: { id: string } } }>(t.url, t.adminKey, rotate, { id: first.id, grace: 3600 });
  const connection = connect(t.url, first.secret);
  await connected(connection);
  await postGraphQL(t.url, t.adminKey, rotate, { id: second.data!.rotateApiKey.apiKey.id, grace: 0 });
  const answered = performance.now();
  const closed = await Promise.race([connection.whenClosed, sleep(3000).then(() => null)]);
  assert.ok(closed, 'the socket was closed');
  ctx.diagnostic(`closed ${(closed.at - answered).toFixed(0)} ms after the second rotation`);
  assert.equal(closed.code, 4403);
  assert.ok(closed.at - answered <= 1000, `closed ${(closed.at - answered).toFixed(0)} ms after (limit 1000 ms; the periodic re-check alone takes up to 10 s)`);
});

test('a slow subscriber (socket not read) does not hold up another one; the server stays responsive', { timeout: 60_000 }, async (ctx) => {
  const EVENTS = 300;
  const wsUrl = t.url.replace(/^http/, 'ws');
  // The slow one: the protocol by hand, a subscription whose every event is ~60 KB, then the socket paused.
  const slow = new WebSocket(wsUrl, 'graphql-transport-ws');
  openSockets.push(slow);
  await once(slow, 'open');
  let slowMessages = 0;
  const acked = new Promise<void>((resolve, reject) => {
    slow.on('message', (data) => {
      const message = JSON.parse(String(data)) as { type: string };
      if (message.type === 'connection_ack') resolve();
      else if (message.type === 'next') slowMessages++;
      else if (message.type === 'error') reject(new Error(String(data)));
    });
  });
  slow.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${t.adminKey}` } }));
  await acked;
  const fat = Array.from({ length: 250 }, (_, i) => `d${i}: details h${i}: hash a${i}: action`).join(' ');
  const auditBase = feeds().auditFeed.size;
  slow.send(
    JSON.stringify({
      id: 'slow',
      type: 'subscribe',
      payload: { query: `subscription SubSlow($filter: AuditEventFilter) { auditEventRecorded(filter: $filter) { id ${fat} } }`, variables: { filter: { actions: ['user.create'] } } },
    }),
  );
  await registered('auditFeed', auditBase, 1);
  (slow as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();

  const normal = connect(t.url, t.adminKey);
  await connected(normal);
  const tail = auditTail(normal.client, { actions: ['user.create'] });
  await registered('auditFeed', auditBase, 2);

  // Responsiveness probe: a viewer query over HTTP every 100 ms while the events are produced.
  let producing = true;
  const latencies: number[] = [];
  const probe = (async () => {
    while (producing) {
      const started = performance.now();
      const response = await postGraphQL(t.url, t.adminKey, '{ viewer { user { id } } }');
      assert.equal(response.status, 200);
      latencies.push(performance.now() - started);
      await sleep(100);
    }
  })();

  const answeredAt = new Map<string, number>();
  let next = 0;
  const started = performance.now();
  let producedMs = 0;
  try {
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < EVENTS) {
          next++;
          const id = await createUser(t, t.adminKey, [], 'flood');
          answeredAt.set(id, performance.now());
        }
      }),
    );
    producedMs = performance.now() - started;
    await waitUntil(
      () => [...answeredAt.keys()].every((id) => tail.items.some((i) => i.value.targetId === id)),
      5000,
      () => `the normal subscriber received all ${EVENTS} events (has ${tail.items.length})`,
    );
  } finally {
    producing = false;
  }
  await probe;

  const lags = tail.items.filter((i) => answeredAt.has(i.value.targetId ?? '')).map((i) => i.at - answeredAt.get(i.value.targetId!)!);
  const maxLag = Math.max(...lags);
  const maxLatency = Math.max(...latencies);
  ctx.diagnostic(
    `${EVENTS} events produced in ${producedMs.toFixed(0)} ms; normal subscriber: max lag ${maxLag.toFixed(0)} ms after the mutation answered; ` +
      `viewer over HTTP: ${latencies.length} probes, max ${maxLatency.toFixed(0)} ms; slow subscriber had read ${slowMessages} messages`,
  );
  assert.equal(lags.length, EVENTS, 'each event delivered once to the normal subscriber');
  // Bounds that catch a fan-out held up by the unread socket (it stalls until that socket's buffer
  // gives way), not a speed target: those live in bench/. On 2 cores shared with the whole suite
  // the lag reached 1.7 s once with nothing held up.
  assert.ok(maxLag < 5000, `the normal subscriber got every event within 5 s of its mutation (max ${maxLag.toFixed(0)} ms)`);
  assert.ok(latencies.length > 0 && maxLatency < 5000, `the server answered queries meanwhile (max ${maxLatency.toFixed(0)} ms)`);
  assert.equal(slowMessages, 0, 'the slow socket was really not read');
  assert.deepEqual(tail.errors, []);

  // The slow one was merely slow: reading again, it gets its events.
  (slow as unknown as { _socket: { resume(): void } })._socket.resume();
  await waitUntil(() => slowMessages > 0, 10_000, 'the slow subscriber receives events once it reads again');
  tail.stop();
  slow.terminate();
  await waitUntil(() => feeds().auditFeed.size <= auditBase, 5000, () => `both subscribers unregistered (size ${feeds().auditFeed.size}, base ${auditBase})`);
});

describe('live audit tails and alert subscriptions on one server are bounded (MAX_AUDIT_TAILS, MAX_ALERT_SUBSCRIPTIONS), half of them for one user at most', () => {
  // Its own server, with room for four tails (two for one user) and two alert subscriptions (one).
  let small: TestServer;
  const tails = () => small.server.services.alerting.auditFeed.size;
  const tailStarts = async () =>
    Number((await small.db.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE action = 'audit.query' AND details->>'query' = 'auditEventRecorded'`))[0]!.n);
  const auditorOf = async (label: string) => {
    const smallRoles = await roleIdsOf(small, small.adminKey);
    const who = await principal(small, small.adminKey, [smallRoles.get('auditor')!], label);
    const connection = connect(small.url, who.key.secret);
    await connected(connection);
    return { ...who, connection };
  };
  before(async () => {
    small = await startTestServer({ maxAuditTails: 4, maxAlertSubscriptions: 2 });
  });
  after(async () => {
    await small.close();
  });

  test('past its share one user is RATE_LIMITED, whatever key, past the bound anyone is, before anything is audited; alerts are not held back; an ended tail frees its place', async () => {
    const admin = connect(small.url, small.adminKey);
    await connected(admin);
    const first = auditTail(admin.client);
    const second = auditTail(admin.client, { actions: ['user.*'] });
    await waitUntil(() => tails() === 2, 3000, () => `two tails registered (${tails()})`);
    const overShare = await auditTail(admin.client).refused();
    assert.deepEqual(codes(overShare), ['RATE_LIMITED']);
    assert.match(overShare[0]!.message, /At most 2 live audit tails may run at once for one user/);
    // Another key of the same user draws on the same share.
    const adminUser = (await small.ok(small.adminKey, SubViewerDocument)).viewer.user.id;
    const secondKey = await createKey(small, small.adminKey, adminUser);
    const sameUser = connect(small.url, secondKey.secret);
    await connected(sameUser);
    assert.deepEqual(codes(await auditTail(sameUser.client).refused()), ['RATE_LIMITED']);

    const other = await auditorOf('auditor');
    auditTail(other.connection.client);
    auditTail(other.connection.client);
    await waitUntil(() => tails() === 4, 3000, () => `four tails registered (${tails()})`);
    // A third key, with no tail of its own yet: the bound is the server's.
    const third = await auditorOf('auditor-3');
    const full = await auditTail(third.connection.client).refused();
    assert.deepEqual(codes(full), ['RATE_LIMITED']);
    assert.match(full[0]!.message, /At most 4 live audit tails may run at once on this server/);
    assert.equal(await tailStarts(), 4, 'the refused tails were not audited, so no tail received their start');
    const metrics = await (await fetch(`${small.baseUrl}/metrics`)).text();
    assert.match(metrics, /keyledger_live_subscriptions\{feed="audit_tail"\} 4/);
    assert.match(metrics, /keyledger_live_subscriptions_refused_total\{feed="audit_tail"\} 3/);
    // Alerts are another feed, not bounded by this.
    const alertStream = alerts(third.connection.client);
    await waitUntil(() => small.server.services.alerting.alertFeed.size === 1, 3000, 'the alert subscription registered');
    assert.deepEqual(alertStream.errors, []);

    first.stop();
    await waitUntil(() => tails() === 3, 3000, () => `the stopped tail unregistered (${tails()})`);
    const again = auditTail(third.connection.client, { actions: ['user.create'] });
    await waitUntil(() => tails() === 4, 3000, () => `the new tail registered (${tails()})`);
    const userId = await createUser(small, small.adminKey, [], 'tailed');
    await again.first((e) => e.targetId === userId, 3000, 'the new tail receives events');
    await second.first((e) => e.targetId === userId, 3000, 'the older tail still receives events');
    assert.deepEqual(again.errors, []);
    for (const connection of [admin, sameUser, other.connection, third.connection]) await connection.client.dispose();
    await waitUntil(() => tails() === 0, 3000, () => `every tail unregistered (${tails()})`);
  });

  test('alert subscriptions: past its share one user is RATE_LIMITED, past the bound anyone is; an ended one frees its place', async () => {
    const subscriptions = () => small.server.services.alerting.alertFeed.size;
    await waitUntil(() => subscriptions() === 0, 3000, () => `no alert subscription left from before (${subscriptions()})`);
    const admin = connect(small.url, small.adminKey);
    await connected(admin);
    const mine = alerts(admin.client);
    await waitUntil(() => subscriptions() === 1, 3000, 'the first alert subscription registered');
    const overShare = await alerts(admin.client).refused();
    assert.deepEqual(codes(overShare), ['RATE_LIMITED']);
    assert.match(overShare[0]!.message, /At most 1 alert subscriptions may run at once for one user/);

    const other = await auditorOf('alert-reader');
    const theirs = alerts(other.connection.client);
    await waitUntil(() => subscriptions() === 2, 3000, 'another user takes the second place');
    const third = await auditorOf('alert-reader-3');
    const full = await alerts(third.connection.client).refused();
    assert.deepEqual(codes(full), ['RATE_LIMITED']);
    assert.match(full[0]!.message, /At most 2 alert subscriptions may run at once on this server/);
    assert.match(await (await fetch(`${small.baseUrl}/metrics`)).text(), /keyledger_live_subscriptions_refused_total\{feed="alerts"\} 2/);

    mine.stop();
    await waitUntil(() => subscriptions() === 1, 3000, 'the stopped subscription unregistered');
    const again = alerts(third.connection.client);
    await waitUntil(() => subscriptions() === 2, 3000, 'the freed place is taken');
    assert.deepEqual([...again.errors, ...theirs.errors], []);
    for (const connection of [admin, other.connection, third.connection]) await connection.client.dispose();
    await waitUntil(() => subscriptions() === 0, 3000, 'every alert subscription unregistered');
  });

  test('a tail whose key loses audit:read ends at once, though its filter matches nothing, and frees its place', async () => {
    const role = (await small.ok(small.adminKey, SubCreateRoleDocument, { input: { name: unique('tail-reader'), permissions: ['audit:read'] } })).createRole.id;
    const who = await principal(small, small.adminKey, [role], 'tail-reader');
    const connection = connect(small.url, who.key.secret);
    await connected(connection);
    const quiet = auditTail(connection.client, { actions: ['nothing.ever'] });
    await waitUntil(() => tails() === 1, 3000, () => `the tail registered (${tails()})`);
    await small.ok(small.adminKey, SubUpdateRoleDocument, { id: role, input: { permissions: ['alerts:read'] } });
    await waitUntil(() => quiet.completed && tails() === 0, 3000, () => `the tail completed (${quiet.completed}) and left (${tails()})`);
    assert.equal(connection.closed, null, 'the key still verifies: its socket stays');
    await connection.client.dispose();
  });

  test('a tail whose audit event cannot be written is refused and leaves nothing registered', async () => {
    const admin = connect(small.url, small.adminKey);
    await connected(admin);
    await small.db.query(`CREATE FUNCTION refuse_tail_events() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.details->>'query' = 'auditEventRecorded' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$`);
    await small.db.query(`CREATE TRIGGER refuse_tail_events BEFORE INSERT ON audit_staging FOR EACH ROW EXECUTE FUNCTION refuse_tail_events()`);
    try {
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(codes(await auditTail(admin.client).refused()), ['INTERNAL_SERVER_ERROR']);
      }
      assert.equal(tails(), 0, 'an unaudited tail is not left registered, taking a place');
    } finally {
      await small.db.query('DROP TRIGGER refuse_tail_events ON audit_staging');
      await small.db.query('DROP FUNCTION refuse_tail_events()');
    }
    const tail = auditTail(admin.client);
    await waitUntil(() => tails() === 1, 3000, () => `a tail registers once its event can be written (${tails()})`);
    assert.deepEqual(tail.errors, []);
    await admin.client.dispose();
  });
});

/** The same checks with each cross-instance transport: PostgreSQL NOTIFY, and Redis pub/sub when REDIS_URL is set. */
function twoProcesses(title: string, extraEnv: () => Record<string, string>, skip: string | false = false) {
describe(title, { skip }, () => {
  const PEPPER = randomBytes(32).toString('base64url');
  const ADMIN_KEY = generateKey('kl');
  const cluster = new Cluster();
  let db: TestDatabase;
  let A: Instance;
  let B: Instance;
  let clusterRoles: Map<string, string>;

  before(async () => {
    db = await createTestDatabase();
    const env = { DATABASE_URL: db.url, KEY_PEPPER: PEPPER, BOOTSTRAP_ADMIN_KEY: ADMIN_KEY, ...extraEnv() };
    A = await cluster.start('A', env);
    B = await cluster.start('B', env);
    clusterRoles = await roleIdsOf(A, ADMIN_KEY);
  });

  after(async () => {
    await cluster.stopAll();
    await db?.drop();
  });

  test('a subscriber on B receives an alert raised on A and an audit event written on A', async () => {
    const connection = connect(B.url, ADMIN_KEY);
    await connected(connection);
    const alertStream = alerts(connection.client, { types: ['REVOKED_KEY_USED'] });
    const tail = auditTail(connection.client);
    // The tail's own audit.query event comes back through it: B's feeds are listening (the alert stream started first).
    await tail.first((e) => e.action === 'audit.query' && e.details?.query === 'auditEventRecorded', 5000, "the tail's own audit.query on B");
    await viewerOver(connection);

    const ownerId = await createUser(A, ADMIN_KEY, [], 'cluster-user');
    await tail.first((e) => e.action === 'user.create' && e.targetId === ownerId, 2000, 'user.create written on A, heard on B');
    const key = await raiseRevokedKeyUsed(A, ADMIN_KEY, ownerId);
    const alert = (await alertStream.first((a) => a.key?.id === key.id, 2000, 'the alert raised on A, delivered on B')).value;
    assert.equal(alert.type, 'REVOKED_KEY_USED');
    assert.equal(alert.severity, 'HIGH');
    assert.equal(alert.key?.name, key.name);
    await tail.first((e) => e.action === 'key.revoke' && e.targetId === key.id, 2000, 'key.revoke written on A, heard on B');
    assert.deepEqual(alertStream.errors, []);
    assert.deepEqual(tail.errors, []);
    alertStream.stop();
    tail.stop();
  });

  test('another deployment (its own database) on the same transport is not heard', async () => {
    const otherDb = await createTestDatabase();
    const otherAdmin = generateKey('kl');
    let other: Instance | undefined;
    try {
      other = await cluster.start('other', { ...extraEnv(), DATABASE_URL: otherDb.url, KEY_PEPPER: randomBytes(32).toString('base64url'), BOOTSTRAP_ADMIN_KEY: otherAdmin });
      const connection = connect(B.url, ADMIN_KEY);
      await connected(connection);
      const alertStream = alerts(connection.client, { types: ['REVOKED_KEY_USED'] });
      await viewerOver(connection);
      const foreign = await raiseRevokedKeyUsed(other, otherAdmin, await createUser(other, otherAdmin, [], 'other-deployment'));
      const own = await raiseRevokedKeyUsed(A, ADMIN_KEY, await createUser(A, ADMIN_KEY, [], 'own-deployment'));
      await alertStream.first((a) => a.key?.id === own.id, 2000, "this deployment's alert");
      await sleep(300);
      // Its key does not exist here, so the alert could only be told by its message.
      assert.deepEqual(alertStream.values.filter((a) => a.key?.id !== own.id), [], "the other deployment's alert");
      assert.ok(!JSON.stringify(alertStream.values).includes(foreign.name));
      alertStream.stop();
    } finally {
      if (other) await stopProcess(other.process);
      await otherDb.drop();
    }
  });

  test('a key revoked on A closes its socket on B with 4403', async (ctx) => {
    const role = (await A.ok(ADMIN_KEY, SubCreateRoleDocument, { input: { name: unique('alerts-reader'), permissions: ['alerts:read'] } })).createRole.id;
    const who = await principal(A, ADMIN_KEY, [role, clusterRoles.get('member')!], 'cluster-revoked');
    const connection = connect(B.url, who.key.secret);
    await connected(connection);
    const stream = new Stream(connection.client, 'subscription { alertRaised { id } }', undefined, (d) => d);
    assert.equal((await viewerOver(connection)).userId, who.userId);
    assert.deepEqual(stream.errors, []);
    await revoke(A, ADMIN_KEY, who.key.id, 'revoked on A');
    const answered = performance.now();
    const closed = await Promise.race([connection.whenClosed, sleep(3000).then(() => null)]);
    assert.ok(closed, 'the socket on B was closed');
    ctx.diagnostic(`B closed the socket ${(closed.at - answered).toFixed(0)} ms after A answered revokeApiKey`);
    assert.equal(closed.code, 4403);
    assert.ok(closed.at - answered <= 1000, `closed ${(closed.at - answered).toFixed(0)} ms after the revocation on A (limit 1000 ms)`);
  });
});
}

twoProcesses('two server processes on one database', () => ({}));
const redis = redisForTests();
twoProcesses('two server processes with REDIS_URL: alerts and audit events travel over Redis', () => ({ REDIS_URL: redis.url! }), redis.skip);
