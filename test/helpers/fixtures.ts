import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CreateApiKeyDocument, CreateUserDocument, RolesDocument } from '../generated/graphql';
import type { GraphQLResponse, TestServer } from './server';

/** Shared test fixtures: one implementation per job, re-used by the principal helper modules. */

/** Unique per call (and readable in failure output), so creating mutations never collide on a name or email. */
export function unique(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

/** Role ids by name, read as admin; `builtInOnly` keeps only the built-in roles. */
export async function roleIds(t: TestServer, options: { builtInOnly?: boolean } = {}): Promise<Map<string, string>> {
  const data = await t.ok(t.adminKey, RolesDocument);
  return new Map(data.roles.filter((r) => !options.builtInOnly || r.builtIn).map((r) => [r.name, r.id]));
}

/** id of a role by name (built-in or custom); fails the test when there is none. */
export async function roleIdByName(t: TestServer, name: string): Promise<string> {
  const id = (await roleIds(t)).get(name);
  assert.ok(id, `role ${name} exists`);
  return id;
}

/** As admin: a human with exactly `name`, `email` and `roleIds`; returns its id. */
export async function createUser(t: TestServer, input: { name: string; email: string; roleIds: string[] }): Promise<string> {
  const data = await t.ok(t.adminKey, CreateUserDocument, { input });
  return data.createUser.id;
}

/** As admin: a key for `ownerId` with `permissions` (default '*': exactly what the owner's roles hold). */
export async function createKeyFor(
  t: TestServer,
  ownerId: string,
  options: { name?: string; permissions?: string[] } = {},
): Promise<{ keyId: string; secret: string }> {
  const data = await t.ok(t.adminKey, CreateApiKeyDocument, {
    input: { ownerId, name: options.name ?? 'k', permissions: options.permissions ?? ['*'] },
  });
  return { keyId: data.createApiKey.apiKey.id, secret: data.createApiKey.secret };
}

/** The response failed, and its first error carries `code`; returns that error. */
export function firstErrorWithCode(response: GraphQLResponse<unknown>, code: string): NonNullable<GraphQLResponse<unknown>['errors']>[number] {
  assert.ok(response.errors && response.errors.length > 0, `expected ${code}, got data ${JSON.stringify(response.data)}`);
  const error = response.errors[0]!;
  assert.equal(error.extensions?.code, code, `expected ${code}: ${JSON.stringify(response.errors)}`);
  return error;
}

/**
 * Runs `body` while PostgreSQL refuses to stage audit events of `action` whose details mention
 * `marker`: a change (or read) that cannot be audited must not happen.
 */
export async function whileAuditRefuses<T>(db: Pick<TestServer['db'], 'query'>, action: string, marker: string, body: () => Promise<T>): Promise<T> {
  const name = `test_refuse_${marker.replace(/\W/g, '_')}`;
  await db.query(`
    CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.action = '${action}' AND NEW.details::text LIKE '%${marker}%' THEN
        RAISE EXCEPTION 'trigger refuses the ${marker} audit event';
      END IF;
      RETURN NEW;
    END $$`);
  await db.query(`CREATE TRIGGER ${name} BEFORE INSERT ON audit_staging FOR EACH ROW EXECUTE FUNCTION ${name}()`);
  try {
    return await body();
  } finally {
    await db.query(`DROP TRIGGER ${name} ON audit_staging`);
    await db.query(`DROP FUNCTION ${name}()`);
  }
}
