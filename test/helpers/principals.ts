import assert from 'node:assert/strict';
import {
  AuditEventsDocument,
  CreateRoleDocument,
  ViewerDocument,
  type AuditEventFilter,
  type AuditEventsQuery,
} from '../generated/graphql';
import { createKeyFor, createUser, firstErrorWithCode, roleIdByName, unique } from './fixtures';
import type { GraphQLResponse, TestServer } from './server';

/** A user plus one key for it: what a test needs to act as someone. */
export interface TestPrincipal {
  userId: string;
  keyId: string;
  /** The key's secret, for the Authorization header */
  key: string;
  name: string;
  email: string;
}

export type AuditNode = AuditEventsQuery['auditEvents']['nodes'][number];

/** The bootstrap admin as a principal: its user id and key id, read through viewer. */
export async function adminPrincipal(t: TestServer): Promise<TestPrincipal> {
  const data = await t.ok(t.adminKey, ViewerDocument);
  return {
    userId: data.viewer.user.id,
    keyId: data.viewer.key.id,
    key: t.adminKey,
    name: data.viewer.user.name,
    email: data.viewer.user.email ?? '',
  };
}

/**
 * As admin: a human holding exactly `roleIds`, and one key for it. The key gets `keyPermissions`
 * (default ['*'], i.e. everything the owner holds), so its effective permissions are the roles'.
 */
export async function createPrincipal(
  t: TestServer,
  options: { roleIds?: string[]; label?: string; keyPermissions?: string[] } = {},
): Promise<TestPrincipal> {
  const name = unique(options.label ?? 'person');
  const email = `${name}@example.test`;
  const userId = await createUser(t, { name, email, roleIds: options.roleIds ?? [] });
  const key = await createKeyFor(t, userId, { permissions: options.keyPermissions ?? ['*'] });
  return { userId, keyId: key.keyId, key: key.secret, name, email };
}

/** A principal holding only the named built-in role (e.g. member, auditor). */
export async function principalWithBuiltIn(t: TestServer, roleName: string): Promise<TestPrincipal> {
  return createPrincipal(t, { roleIds: [await roleIdByName(t, roleName)], label: roleName });
}

/** As admin: a custom role with exactly `permissions`, and a principal holding only that role. */
export async function principalWithPermissions(
  t: TestServer,
  permissions: string[],
  label = 'custom',
): Promise<TestPrincipal & { roleId: string }> {
  const role = await t.ok(t.adminKey, CreateRoleDocument, { input: { name: unique(`${label}-role`), permissions } });
  const principal = await createPrincipal(t, { roleIds: [role.createRole.id], label });
  return { ...principal, roleId: role.createRole.id };
}

/** Audit events matching `filter`, newest first, read as admin. */
export async function auditEvents(t: TestServer, filter: AuditEventFilter, first = 100): Promise<AuditNode[]> {
  const data = await t.ok(t.adminKey, AuditEventsDocument, { filter, first });
  return data.auditEvents.nodes;
}

/** The audit events one HTTP request wrote, found through the x-request-id response header. */
export async function eventsOfRequest(t: TestServer, response: GraphQLResponse<unknown>, actions: string[]): Promise<AuditNode[]> {
  const requestId = response.headers.get('x-request-id');
  assert.ok(requestId, 'the response carries x-request-id');
  return (await auditEvents(t, { actions }, 500)).filter((e) => e.requestId === requestId);
}

/**
 * The one audit event a successful mutation wrote, checked for who did it and from where:
 * actor and actor key are the caller's, outcome SUCCESS, source address loopback.
 */
export async function expectOneAuditEvent(
  t: TestServer,
  expected: { action: string; targetId: string; caller: TestPrincipal; targetType?: string },
): Promise<AuditNode> {
  const events = await auditEvents(t, { actions: [expected.action], targetId: expected.targetId });
  assert.equal(events.length, 1, `exactly one ${expected.action} event for ${expected.targetId}: ${JSON.stringify(events)}`);
  const event = events[0]!;
  assert.equal(event.action, expected.action);
  assert.equal(event.outcome, 'SUCCESS');
  assert.equal(event.actorType, 'USER');
  assert.equal(event.actor?.id, expected.caller.userId, 'actor is the calling user');
  assert.equal(event.actorKey?.id, expected.caller.keyId, 'actorKey is the calling key');
  assert.equal(event.targetId, expected.targetId);
  if (expected.targetType) assert.equal(event.targetType, expected.targetType);
  assert.equal(event.ip, '127.0.0.1');
  assert.ok(event.requestId, 'the event names the request');
  assert.match(event.hash, /^[0-9a-f]{64}$/);
  return event;
}

/** Patterns that must never reach a client: stack traces and SQL. */
const LEAKS: Array<[string, RegExp]> = [
  ['stack', /stack/i],
  ['SQL select', /\bselect\b[\s\S]*\bfrom\b/i],
  ['SQL insert', /\binsert\s+into\b/i],
  ['SQL update', /\bupdate\s+"?\w+"?\s+set\b/i],
  ['SQL delete', /\bdelete\s+from\b/i],
  ['SQL returning', /\breturning\b/i],
  ['driver error', /QueryFailedError|duplicate key value|violates|relation "|syntax error at|pg_advisory/i],
  ['source path', /\/src\/|\.ts:\d+|node_modules/],
];

export function assertNoLeak(response: { errors?: unknown }): void {
  const text = JSON.stringify(response.errors ?? []);
  for (const [label, pattern] of LEAKS) assert.doesNotMatch(text, pattern, `errors leak ${label}: ${text}`);
}

/**
 * The request failed with exactly this code on its first error, leaked nothing, and (for a field
 * error) returned no data for the failed root field.
 */
export function expectError(response: GraphQLResponse<unknown>, code: string): void {
  firstErrorWithCode(response, code);
  assert.ok(response.data === null || response.data === undefined, `no data with ${code}: ${JSON.stringify(response.data)}`);
  assertNoLeak(response);
}
