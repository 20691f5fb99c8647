/**
 * How many usage records per second the buffered writer can put into usage_events: RECORDS
 * records for a few hundred keys are handed to UsageService as fast as the producer can, and the
 * time until all are written is measured (the writer flushes every 200 ms and at 2,000 buffered).
 * Usage: npm run bench:usage-ingest   (DATABASE_URL or embedded PostgreSQL; RECORDS)
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createDataSource, migrate } from '../src/db/data-source';
import { ensureUsagePartitions } from '../src/db/partitions';
import { VerifyCode } from '../src/entities/enums';
import { UsageService } from '../src/services/usage.service';
import { createBenchDatabase } from './lib/bench-database';
import { runBench } from './lib/run';

const RECORDS = Number(process.env.RECORDS ?? 1_000_000);

async function main(): Promise<void> {
  const db = await createBenchDatabase();
  const dataSource = createDataSource(db.url, { onQuery: () => {}, onError: () => {} });
  await dataSource.initialize();
  try {
    await migrate(dataSource);
    await ensureUsagePartitions(dataSource);
    const [{ id: ownerId }] = (await dataSource.query(
      `INSERT INTO users (kind, name, email, status) VALUES ('HUMAN', 'bench', 'bench@example.com', 'ACTIVE') RETURNING id`,
    )) as Array<{ id: string }>;
    const keyIds = (await dataSource.query(
      `INSERT INTO api_keys (hash, prefix, start, name, owner_id)
       SELECT decode(md5(g::text) || md5(g::text), 'hex'), 'kl', 'kl_bench', 'bench', $1 FROM generate_series(1, 300) g RETURNING id`,
      [ownerId!],
    )) as Array<{ id: string }>;
    const usage = new UsageService(dataSource, (error) => console.error(error));
    const started = performance.now();
    for (let i = 0; i < RECORDS; i++) {
      usage.record({
        occurredAt: Date.now(),
        keyId: keyIds[i % keyIds.length]!.id,
        ownerId,
        code: i % 50 === 0 ? VerifyCode.INSUFFICIENT_PERMISSIONS : VerifyCode.VALID,
        ip: `10.0.${i % 200}.${i % 250}`,
        resource: i % 3 === 0 ? `invoices/${randomUUID()}` : null,
      });
      // As verifications do: wait when the writer signals it is behind; yield now and then.
      if (usage.saturated) await usage.drained();
      else if (i % 2000 === 1999) await new Promise((resolve) => setImmediate(resolve));
    }
    await usage.close();
    const seconds = (performance.now() - started) / 1000;
    const [{ count }] = (await dataSource.query('SELECT count(*)::int AS count FROM usage_events')) as Array<{ count: number }>;
    console.log(`\nusage ingest: ${RECORDS} records in ${seconds.toFixed(1)} s = ${(RECORDS / seconds).toFixed(0)} records/s (target >= 50,000)`);
    console.log(`written ${count}, dropped ${usage.dropped} (producers wait past 50,000 buffered; drops only past 200,000)`);
  } finally {
    await dataSource.destroy();
    await db.cleanup();
  }
}

runBench(main);
