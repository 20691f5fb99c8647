import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { generateKey } from '../../src/auth/key-format';
import type { Config } from '../../src/config';
import { DEFAULT_ALERT_SETTINGS } from '../../src/services/alert-detectors';
import { DEFAULT_MAX_ALERT_SUBSCRIPTIONS, DEFAULT_MAX_AUDIT_TAILS } from '../../src/services/alerting';
import { startServer, type RunningServer } from '../../src/server/app';
import { createTestDatabase, type TestDatabase } from './database';

export interface GraphQLResponse<T> {
  status: number;
  data?: T | null;
  errors?: Array<{ message: string; path?: Array<string | number>; extensions?: Record<string, unknown> }>;
  headers: Headers;
}

export interface TestServer {
  server: RunningServer;
  db: TestDatabase;
  url: string;
  baseUrl: string;
  adminKey: string;
  /** Every log line the server wrote (pino JSON) */
  logs: string[];
  request<T, V>(key: string | null, document: TypedDocumentNode<T, V>, variables?: V, headers?: Record<string, string>): Promise<GraphQLResponse<T>>;
  /** Like request, but fails the test on any error and returns data */
  ok<T, V>(key: string, document: TypedDocumentNode<T, V>, variables?: V): Promise<T>;
  close(): Promise<void>;
}

export function testConfig(databaseUrl: string, overrides: Partial<Config> = {}): Config {
  return {
    port: 0,
    host: '127.0.0.1',
    databaseUrl,
    dataDir: '/nonexistent',
    // Test files run in parallel against one PostgreSQL (max_connections 100 by default).
    databasePoolSize: 8,
    keyPepper: randomBytes(32).toString('base64url'),
    keyPrefix: 'kl',
    bootstrapAdminKey: generateKey('kl'),
    redisUrl: null,
    keyCacheSize: 100_000,
    maxAuditTails: DEFAULT_MAX_AUDIT_TAILS,
    maxAlertSubscriptions: DEFAULT_MAX_ALERT_SUBSCRIPTIONS,
    alerts: DEFAULT_ALERT_SETTINGS,
    trustProxy: false,
    logLevel: 'info',
    splunkHec: null,
    ...overrides,
  };
}

export async function postGraphQL<T>(
  url: string,
  key: string | null,
  query: string,
  variables?: unknown,
  headers: Record<string, string> = {},
): Promise<GraphQLResponse<T>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  let body: { data?: T; errors?: GraphQLResponse<T>['errors'] };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`non-JSON response ${response.status}: ${text.slice(0, 200)}`);
  }
  return { status: response.status, data: body.data, errors: body.errors, headers: response.headers };
}

/** A real server on a free loopback port, on its own fresh database. */
export async function startTestServer(overrides: Partial<Config> = {}): Promise<TestServer> {
  const db = await createTestDatabase();
  const logs: string[] = [];
  const logDestination = new Writable({
    write(chunk, _encoding, done) {
      logs.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const config = testConfig(db.url, overrides);
  const server = await startServer(config, { logDestination, announce: (line) => logs.push(line) });
  const request: TestServer['request'] = (key, document, variables, headers) =>
    postGraphQL(server.url, key, print(document), variables, headers);
  // Like the server's own readers, a test reading the audit log directly first lets it seal what
  // is committed: a change answers once its event is committed, and the seal follows.
  const auditReader: TestDatabase = {
    ...db,
    query: async (sql, params) => {
      if (/\baudit_events\b/.test(sql) && !/^\s*(DELETE|UPDATE|TRUNCATE)\b/i.test(sql)) await server.services.audit.settled();
      return db.query(sql, params);
    },
  };
  return {
    server,
    db: auditReader,
    url: server.url,
    baseUrl: server.url.replace(/\/graphql$/, ''),
    adminKey: config.bootstrapAdminKey!,
    logs,
    request,
    ok: async (key, document, variables) => {
      const result = await request(key, document, variables);
      if (result.errors?.length) throw new Error(`GraphQL errors: ${JSON.stringify(result.errors)}`);
      return result.data!;
    },
    close: async () => {
      await server.close();
      await db.drop();
    },
  };
}

export function errorCodes(result: { errors?: Array<{ extensions?: Record<string, unknown> }> }): string[] {
  return (result.errors ?? []).map((e) => String(e.extensions?.code));
}
