import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..', '..');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

export interface Running {
  child: ChildProcess;
  base: string;
  stop(): Promise<void>;
}

async function waitHealthy(base: string, child: ChildProcess, stderr: string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process exited: ${stderr.join('')}`);
    try {
      if ((await fetch(`${base}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not healthy in 60 s: ${stderr.join('')}`);
}

/** A node process running `script` with env; resolves once GET /healthz answers. */
export async function startProcess(script: string, env: Record<string, string>): Promise<Running> {
  const port = await freePort();
  // BENCH_CPU_PROFILE_DIR=<dir>: each server writes a V8 CPU profile there when it stops.
  const profile = process.env.BENCH_CPU_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROFILE_DIR}`] : [];
  const child = spawn(process.execPath, [...profile, join(ROOT, script)], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', process.env.BENCH_VERBOSE ? 'inherit' : 'ignore', process.env.BENCH_VERBOSE ? 'inherit' : 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr?.on('data', (c) => stderr.push(String(c)));
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') process.stderr.write(`${script} exited (${code ?? signal}): ${stderr.join('')}\n`);
  });
  const base = `http://127.0.0.1:${port}`;
  await waitHealthy(base, child, stderr);
  return {
    child,
    base,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Runs `work` against a server `start` starts, and stops it whatever happens. */
export async function withServer<T>(start: () => Promise<Running>, work: (server: Running) => Promise<T>): Promise<T> {
  const server = await start();
  try {
    return await work(server);
  } finally {
    await server.stop();
  }
}

/** Usage records a server counts as written so far, from its /metrics. */
export async function usageWritten(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('keyledger_usage_records{state="written"}'));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** The real keyledger server. */
export function startKeyledger(env: Record<string, string>): Promise<Running> {
  return startProcess('dist/src/index.js', env);
}

/** POSTs a GraphQL document with a key; throws on any GraphQL error. */
export async function gql<T>(base: string, key: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown[] };
  if (body.errors || !body.data) throw new Error(`GraphQL error: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** CPU seconds (user + system) a process has used so far; null where /proc is not available. */
export function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime and stime, in the kernel's 100 Hz ticks
  } catch {
    return null;
  }
}

/**
 * CPU seconds used so far by every PostgreSQL process on this machine (backends, WAL writer,
 * checkpointer): on a quiet machine, what the database spent on a bench's work. Backends that
 * exit between two readings take their time with them, so read around work on pooled connections.
 */
export function postgresCpuSeconds(): number | null {
  try {
    let total = 0;
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue;
      } catch {
        continue; // gone meanwhile
      }
      total += cpuSeconds(Number(entry)) ?? 0;
    }
    return total;
  } catch {
    return null;
  }
}
