import assert from 'node:assert/strict';
import {
  KtAuditEventsDocument,
  KtCreateKeyDocument,
  KtCreateServiceAccountDocument,
  KtVerifyDocument,
  KtViewerDocument,
  type CreateApiKeyInput,
  type KtAuditEventsQuery,
  type KtCreateKeyMutation,
  type KtVerifyQuery,
  type VerifyKeyInput,
} from '../generated/graphql';
import { createKeyFor, createUser, firstErrorWithCode, roleIds, unique } from './fixtures';
import type { GraphQLResponse, TestServer } from './server';

/** Helpers for the key lifecycle, verification and secrets tests (self-contained on purpose). */

export interface KeyPrincipal {
  userId: string;
  keyId: string;
  /** The key's secret, for the Authorization header */
  key: string;
}

export type KeyNode = KtCreateKeyMutation['createApiKey']['apiKey'];
export type VerifyNode = KtVerifyQuery['verifyKey'];
export type AuditNode = KtAuditEventsQuery['auditEvents']['nodes'][number];

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` until `done` accepts its value or the deadline passes; returns the accepted value
 * and when it was observed. Fails the test at the deadline with the last value seen.
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  options: { timeoutMs: number; intervalMs?: number; what: string },
): Promise<{ value: T; at: number }> {
  const deadline = Date.now() + options.timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await probe();
    const at = Date.now();
    if (done(last)) return { value: last, at };
    if (at > deadline) assert.fail(`timed out waiting for ${options.what}; last value ${JSON.stringify(last)}`);
    await sleep(options.intervalMs ?? 50);
  }
}

export async function viewerOf(t: TestServer, key: string): Promise<KeyPrincipal> {
  const data = await t.ok(key, KtViewerDocument);
  return { userId: data.viewer.user.id, keyId: data.viewer.key.id, key };
}

/** As admin: a human with the given role ids, no key. */
export async function createHuman(t: TestServer, roles: string[], label = 'person'): Promise<string> {
  const name = unique(label);
  return createUser(t, { name, email: `${name}@example.test`, roleIds: roles });
}

/** As admin: a service account owned by `ownerId`. */
export async function createServiceAccount(t: TestServer, ownerId: string, roles: string[] = [], label = 'svc'): Promise<string> {
  const data = await t.ok(t.adminKey, KtCreateServiceAccountDocument, { input: { name: unique(label), ownerId, roleIds: roles } });
  return data.createServiceAccount.id;
}

/** As `actor` (default admin): a key; fails the test on any error. */
export async function createKey(
  t: TestServer,
  input: CreateApiKeyInput,
  actor: string = t.adminKey,
): Promise<{ secret: string; key: KeyNode }> {
  const data = await t.ok(actor, KtCreateKeyDocument, { input });
  return { secret: data.createApiKey.secret, key: data.createApiKey.apiKey };
}

/** As admin: a human holding the named roles, and a '*' key for it (its effective permissions are the roles'). */
export async function principalWithRoles(t: TestServer, roleNames: string[], label?: string): Promise<KeyPrincipal> {
  const ids = await roleIds(t);
  const roles = roleNames.map((n) => {
    const id = ids.get(n);
    assert.ok(id, `role ${n} exists`);
    return id;
  });
  const userId = await createHuman(t, roles, label ?? (roleNames.join('-') || 'viewer'));
  const created = await createKeyFor(t, userId, { name: unique('principal-key') });
  return { userId, keyId: created.keyId, key: created.secret };
}

export async function verify(t: TestServer, verifierKey: string, input: VerifyKeyInput): Promise<VerifyNode> {
  const data = await t.ok(verifierKey, KtVerifyDocument, { input });
  return data.verifyKey;
}

/** Audit events (oldest first) matching the filter, read as admin. */
export async function auditEvents(t: TestServer, filter: { actions?: string[]; targetId?: string }): Promise<AuditNode[]> {
  const data = await t.ok(t.adminKey, KtAuditEventsDocument, { filter, first: 500 });
  return data.auditEvents.nodes;
}

/** Exactly one `action` event for the target, successful, by the calling user with the calling key. */
export async function expectAudit(
  t: TestServer,
  expected: { action: string; targetId: string; actor: KeyPrincipal },
): Promise<AuditNode> {
  const events = await auditEvents(t, { actions: [expected.action], targetId: expected.targetId });
  assert.equal(events.length, 1, `exactly one ${expected.action} event for ${expected.targetId}: ${JSON.stringify(events)}`);
  const event = events[0]!;
  assert.equal(event.outcome, 'SUCCESS');
  assert.equal(event.actorType, 'USER');
  assert.equal(event.actor?.id, expected.actor.userId, `${expected.action}: actor is the caller`);
  assert.equal(event.actorKey?.id, expected.actor.keyId, `${expected.action}: actorKey is the caller's key`);
  assert.equal(event.targetId, expected.targetId);
  return event;
}

/** The first error carries `code`, and the failed field returned no data. */
export function expectError(response: GraphQLResponse<unknown>, code: string): Record<string, unknown> {
  const error = firstErrorWithCode(response, code);
  // A nullable root field (apiKey) answers null beside the error; a non-null one nulls data.
  const data = response.data as Record<string, unknown> | null | undefined;
  assert.ok(!data || Object.values(data).every((v) => v === null), `no data with ${code}: ${JSON.stringify(response.data)}`);
  return error.extensions ?? {};
}

/** BAD_USER_INPUT whose extensions.field matches `field`. */
export function expectBadInput(response: GraphQLResponse<unknown>, field: RegExp | string): void {
  const extensions = expectError(response, 'BAD_USER_INPUT');
  const named = String(extensions.field ?? '');
  if (typeof field === 'string') assert.equal(named, field, `extensions.field names ${field}: ${JSON.stringify(response.errors)}`);
  else assert.match(named, field, `extensions.field names the field: ${JSON.stringify(response.errors)}`);
}

/** One character of the random part swapped for another: still the key's shape, wrong checksum. */
export function withOneCharacterChanged(secret: string): string {
  const at = secret.indexOf('_') + 10;
  const original = secret[at]!;
  const replacement = original === 'A' ? 'B' : 'A';
  return secret.slice(0, at) + replacement + secret.slice(at + 1);
}

export async function countRows(t: TestServer, table: string, where = 'true'): Promise<number> {
  const rows = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`);
  return rows[0]!.n;
}
