#!/usr/bin/env node
'use strict';
// Runs the compiled test files with node's test runner against a real PostgreSQL: DATABASE_URL when
// set, otherwise an embedded server started here for this run. Each test file creates its own database.
const { mkdtempSync, readdirSync, rmSync, statSync } = require('node:fs');
const { tmpdir, availableParallelism } = require('node:os');
const { join } = require('node:path');
const { spawn } = require('node:child_process');

const root = join(__dirname, '..');

function testFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return testFiles(path);
    return name.endsWith('.test.js') ? [path] : [];
  });
}

async function main() {
  const filter = process.argv.slice(2);
  let files = testFiles(join(root, 'dist', 'test')).sort();
  if (filter.length > 0) files = files.filter((f) => filter.some((pattern) => f.includes(pattern)));

  let embedded = null;
  let adminUrl = process.env.DATABASE_URL;
  let scratch = null;
  if (!adminUrl) {
    const { startEmbeddedPostgres } = require(join(root, 'dist', 'src', 'db', 'embedded.js'));
    scratch = mkdtempSync(join(tmpdir(), 'keyledger-test-'));
    embedded = await startEmbeddedPostgres(scratch);
    adminUrl = embedded.url;
    console.log(`# embedded PostgreSQL for this run in ${scratch}`);
  }
  const concurrency = Math.max(2, Math.min(4, availableParallelism()));
  const child = spawn(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files], {
    stdio: 'inherit',
    env: { ...process.env, TEST_DATABASE_URL: adminUrl, KEYLEDGER_EMBEDDED_TEST_DIR: scratch ?? '' },
  });
  const code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
  if (embedded) await embedded.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  process.exit(code);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
