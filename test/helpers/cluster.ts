import { spawnSync } from 'node:child_process';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { startServerProcess, type ServerProcess } from './process';
import { postGraphQL, type GraphQLResponse } from './server';

/**
 * Several real server processes (`node dist/src/index.js`) on one database: what the scale-out
 * tests need. Every process started here is tracked so an after() hook can stop them all, even
 * when a test (or a later start) failed half-way.
 */

export interface Instance {
  name: string;
  process: ServerProcess;
  url: string;
  baseUrl: string;
  request<T, V>(key: string | null, document: TypedDocumentNode<T, V>, variables?: V): Promise<GraphQLResponse<T>>;
  /** Like request, but throws on any error or non-200 answer and returns data */
  ok<T, V>(key: string, document: TypedDocumentNode<T, V>, variables?: V): Promise<T>;
  /** Numeric samples of /metrics, by `name{labels}` exactly as printed */
  metrics(): Promise<Map<string, number>>;
}

const printed = new WeakMap<object, string>();

/** The document's text, printed once (load tests send the same document thousands of times). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function queryText(document: TypedDocumentNode<any, any>): string {
  let text = printed.get(document);
  if (text === undefined) printed.set(document, (text = print(document)));
  return text;
}

export class Cluster {
  private readonly started: ServerProcess[] = [];

  /** Starts one process; it is stopped by stopAll() whatever happens afterwards. */
  async start(name: string, env: Record<string, string>): Promise<Instance> {
    const proc = await startServerProcess(env);
    this.started.push(proc);
    const url = proc.url;
    const request: Instance['request'] = (key, document, variables) =>
      postGraphQL(url, key, queryText(document), variables);
    return {
      name,
      process: proc,
      url,
      baseUrl: url.replace(/\/graphql$/, ''),
      request,
      ok: async (key, document, variables) => {
        const result = await request(key, document, variables);
        if (result.status !== 200 || result.errors?.length || !result.data) {
          throw new Error(`${name}: HTTP ${result.status}, errors ${JSON.stringify(result.errors)}`);
        }
        return result.data;
      },
      metrics: async () => {
        const text = await (await fetch(`${url.replace(/\/graphql$/, '')}/metrics`)).text();
        const samples = new Map<string, number>();
        for (const line of text.split('\n')) {
          if (line === '' || line.startsWith('#')) continue;
          const at = line.lastIndexOf(' ');
          samples.set(line.slice(0, at), Number(line.slice(at + 1)));
        }
        return samples;
      },
    };
  }

  /** SIGTERM to every process still running, SIGKILL to any that has not exited after `graceMs`. */
  async stopAll(graceMs = 15_000): Promise<void> {
    await Promise.all(this.started.map((proc) => stopProcess(proc, graceMs)));
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
export async function stopProcess(proc: ServerProcess, graceMs = 15_000): Promise<number | null> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return proc.child.exitCode;
  let timer: NodeJS.Timeout | undefined;
  const exited = proc.stop('SIGTERM');
  const killed = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      proc.child.kill('SIGKILL');
      resolve(null);
    }, graceMs);
  });
  try {
    return await Promise.race([exited, killed]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The Redis the Redis-mode tests use: REDIS_URL when set, else redis://127.0.0.1:6379 when a server
 * answers PING there. Decided synchronously (a child process probes) so the answer can be a
 * node:test `skip` option; `skip` says why there is none.
 */
export function redisForTests(): { url: string; skip: false } | { url: null; skip: string } {
  const configured = process.env.REDIS_URL?.trim();
  if (configured) return { url: configured, skip: false };
  const probe = `
    const socket = require('node:net').connect(6379, '127.0.0.1');
    socket.setTimeout(1500, () => process.exit(2));
    socket.on('connect', () => socket.write('PING\\r\\n'));
    socket.on('data', (data) => process.exit(String(data).startsWith('+PONG') ? 0 : 3));
    socket.on('error', () => process.exit(1));`;
  const result = spawnSync(process.execPath, ['-e', probe], { timeout: 5000 });
  if (result.status === 0) return { url: 'redis://127.0.0.1:6379', skip: false };
  return { url: null, skip: 'no Redis: REDIS_URL is unset and nothing answers PING on 127.0.0.1:6379' };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
