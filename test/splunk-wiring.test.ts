import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { CreateRoleDocument } from './generated/graphql';
import { startTestServer, type TestServer } from './helpers/server';

const TOKEN = 'hec-token-not-for-logs-0123456789';
let collector: Server;
const received: Array<{ fields: { event_id: string }; event: { action: string } }> = [];
let t: TestServer;

before(async () => {
  collector = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += String(c)));
    req.on('end', () => {
      if (req.headers.authorization === `Splunk ${TOKEN}`) {
        received.push(...body.split('\n').filter(Boolean).map((line) => JSON.parse(line)));
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"text":"Success","code":0}');
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  const port = (collector.address() as AddressInfo).port;
  // A poll far longer than any test: only the wake-up on each seal can deliver in time.
  t = await startTestServer({ splunkHec: { url: `http://127.0.0.1:${port}/services/collector/event`, token: TOKEN, pollIntervalMs: 3_600_000 } });
});
after(async () => {
  await t.close();
  await new Promise((resolve) => collector.close(resolve));
});

async function delivered(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(condition(), what);
}

test('with AUDIT_SPLUNK_HEC_URL set, each seal wakes the forwarder: events arrive without waiting for the poll', async () => {
  // The first round at start delivers the bootstrap's events; then the forwarder sleeps for an hour.
  await delivered('the bootstrap events reached the collector', () => received.length > 0);
  const firstBatch = received.length;
  await t.ok(t.adminKey, CreateRoleDocument, { input: { name: 'forwarded-role', permissions: [] } });
  await delivered('the role.create event reached the collector', () => received.some((e) => e.event.action === 'role.create'));
  assert.ok(received.length > firstBatch);
  await t.ok(t.adminKey, CreateRoleDocument, { input: { name: 'forwarded-role-2', permissions: [] } });
  await delivered('a second change was woken for too', () => received.filter((e) => e.event.action === 'role.create').length === 2);

  assert.ok(received.every((e) => typeof e.fields.event_id === 'string'));
  const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
  assert.match(metrics, /keyledger_audit_forwarder_lag_events \d+/);
  assert.ok(!metrics.includes(TOKEN) && t.logs.every((line) => !line.includes(TOKEN)), 'the token is in no log line or metric');
});
