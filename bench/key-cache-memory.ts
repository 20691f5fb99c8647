/**
 * Resident memory of a server holding 1 million key records in its verification cache.
 * Keys are written straight into the database (as if issued over time), then each is verified
 * once through verifyKeys so it is cached; RSS is read from /proc before and after.
 * Usage: npm run bench:key-cache-memory   (DATABASE_URL or embedded PostgreSQL; KEYS)
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client } from 'pg';
import { generateKey, hashKey } from '../src/auth/key-format';
import { createBenchDatabase } from './lib/bench-database';
import { gql, startKeyledger } from './lib/processes';
import { runBench } from './lib/run';

const KEYS = Number(process.env.KEYS ?? 1_000_000);
const BATCH = 100;

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!;
  return Number(line.replace(/\D+/g, '')) / 1024;
}

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ')[1]) : NaN;
}

const HEAP = 'keyledger_nodejs_heap_size_used_bytes';

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const adminKey = generateKey('kl');
  const pepper = randomBytes(32).toString('hex');
  const server = await startKeyledger({ DATABASE_URL: db.url, KEY_PEPPER: pepper, BOOTSTRAP_ADMIN_KEY: adminKey, KEY_CACHE_SIZE: String(KEYS) });
  const sql = new Client({ connectionString: db.url });
  await sql.connect();
  try {
    const { roles } = await gql<{ roles: Array<{ id: string; name: string }> }>(server.base, adminKey, '{ roles { id name } }');
    const verifierKey = (await gql<{ createApiKey: { secret: string } }>(server.base, adminKey,
      'mutation($r: [ID!]) { createApiKey(input: { name: "verifier", roleIds: $r }) { secret } }',
      { r: [roles.find((r) => r.name === 'verifier')!.id] })).createApiKey.secret;
    const [{ id: ownerId }] = (await sql.query(`SELECT id FROM users WHERE name = 'admin'`)).rows as Array<{ id: string }>;

    const secrets: string[] = [];
    for (let done = 0; done < KEYS; done += 10_000) {
      const batch = Array.from({ length: Math.min(10_000, KEYS - done) }, () => generateKey('kl'));
      secrets.push(...batch);
      await sql.query(
        `INSERT INTO api_keys (hash, prefix, start, name, owner_id, granted_permissions)
         SELECT h, 'kl', 'kl_bench', 'bench', $2, '{invoices:read}' FROM unnest($1::bytea[]) h`,
        [batch.map((s) => hashKey(pepper, s)), ownerId],
      );
    }
    const before = rssMiB(server.child.pid!);
    const heapBefore = (await metric(server.base, HEAP)) / 2 ** 20;
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < secrets.length) {
        const slice = secrets.slice(next, (next += BATCH));
        await gql(server.base, verifierKey, 'query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) { code } }', { i: slice.map((key) => ({ key })) });
      }
    }));
    await new Promise((r) => setTimeout(r, 2000));
    const after = rssMiB(server.child.pid!);
    const heapAfter = (await metric(server.base, HEAP)) / 2 ** 20;
    const perKey = (mib: number) => ((mib * 2 ** 20) / KEYS).toFixed(0);
    console.log(`\nkey cache memory: ${KEYS} keys, ${await metric(server.base, 'keyledger_key_cache_entries')} cached\n`);
    console.log('| | RSS MiB | heap used MiB |');
    console.log('|---|---:|---:|');
    console.log(`| before caching | ${before.toFixed(0)} | ${heapBefore.toFixed(0)} |`);
    console.log(`| ${KEYS} keys cached | ${after.toFixed(0)} | ${heapAfter.toFixed(0)} |`);
    console.log(`| per cached key (bytes) | ${perKey(after - before)} | ${perKey(heapAfter - heapBefore)} |`);
  } finally {
    await sql.end();
    await server.stop();
    await db.cleanup();
  }
}

runBench(main);
