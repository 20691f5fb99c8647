import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { ConfigError, loadConfig } from '../src/config';
import { pepperWeakness } from '../src/db/pepper-check';

const PEPPER = 'p'.repeat(64);
const base = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/none', KEY_PEPPER: PEPPER };

test("the failure burst is set by ALERT_FAILURE_BURST or by the contract's name for it, VERIFY_FAILURE_BURST", () => {
  assert.deepEqual(loadConfig(base).alerts.failureBurst, { threshold: 20, windowSeconds: 60 });
  assert.deepEqual(loadConfig({ ...base, VERIFY_FAILURE_BURST: '5/30' }).alerts.failureBurst, { threshold: 5, windowSeconds: 30 });
  assert.deepEqual(loadConfig({ ...base, ALERT_FAILURE_BURST: '7/10' }).alerts.failureBurst, { threshold: 7, windowSeconds: 10 });
  assert.deepEqual(loadConfig({ ...base, ALERT_FAILURE_BURST: '7/10', VERIFY_FAILURE_BURST: '7/010' }).alerts.failureBurst, { threshold: 7, windowSeconds: 10 });
  // "VERIFY_FAILURE_BURST at 20 failures within 60 s": a bare count keeps the 60 s window.
  assert.deepEqual(loadConfig({ ...base, VERIFY_FAILURE_BURST: '5' }).alerts.failureBurst, { threshold: 5, windowSeconds: 60 });
  assert.deepEqual(loadConfig({ ...base, ALERT_FAILURE_BURST: '5', VERIFY_FAILURE_BURST: '5/60' }).alerts.failureBurst, { threshold: 5, windowSeconds: 60 });
});

test('a VERIFY_FAILURE_BURST that is not <count>/<seconds>, or that disagrees with ALERT_FAILURE_BURST, stops the configuration', () => {
  assert.throws(() => loadConfig({ ...base, VERIFY_FAILURE_BURST: 'garbage' }), (error) => error instanceof ConfigError && /VERIFY_FAILURE_BURST/.test(error.message));
  assert.throws(() => loadConfig({ ...base, ALERT_FAILURE_BURST: '7/10', VERIFY_FAILURE_BURST: '5/30' }), (error) => error instanceof ConfigError && /disagree/.test(error.message));
});

test('a DATABASE_URL with a stray % is refused at start by name, without echoing its password', () => {
  for (const url of ['postgres://postgres:Sup3r%zzS3cret@127.0.0.1:5432/db', 'postgres://postgres@127.0.0.1:5432/db%', 'postgres://postgres@127.0.0.1:5432/db?options=-c%20search_path%3D%']) {
    assert.throws(
      () => loadConfig({ ...base, DATABASE_URL: url }),
      (error) => error instanceof ConfigError && /^DATABASE_URL /.test(error.message) && !error.message.includes('S3cret'),
      url,
    );
  }
  assert.equal(loadConfig({ ...base, DATABASE_URL: 'postgres://postgres:Sup3r%25S3cret@127.0.0.1:5432/db' }).databaseUrl, 'postgres://postgres:Sup3r%25S3cret@127.0.0.1:5432/db');
});

test('MAX_AUDIT_TAILS and MAX_ALERT_SUBSCRIPTIONS bound live subscriptions per server: 200 and 2000 unless set; a value that is not a count stops the configuration', () => {
  assert.equal(loadConfig(base).maxAuditTails, 200);
  assert.equal(loadConfig({ ...base, MAX_AUDIT_TAILS: '25' }).maxAuditTails, 25);
  assert.equal(loadConfig(base).maxAlertSubscriptions, 2000);
  assert.equal(loadConfig({ ...base, MAX_ALERT_SUBSCRIPTIONS: '0' }).maxAlertSubscriptions, 0);
  for (const [name, tooMany] of [['MAX_AUDIT_TAILS', '100001'], ['MAX_ALERT_SUBSCRIPTIONS', '1000001']] as const) {
    for (const bad of ['-1', 'many', '1e3', tooMany]) {
      assert.throws(() => loadConfig({ ...base, [name]: bad }), (error) => error instanceof ConfigError && error.message.startsWith(`${name} `), `${name}=${bad}`);
    }
  }
});

test('a pepper from any generator passes the weakness check; placeholders do not', () => {
  for (let i = 0; i < 2000; i++) {
    for (const pepper of [randomBytes(16).toString('hex'), randomBytes(32).toString('base64url'), randomBytes(24).toString('base64')]) {
      assert.equal(pepperWeakness(pepper), null, pepper);
    }
  }
  const weak: Array<[string, RegExp]> = [
    ['x'.repeat(40), /distinct/],
    ['0123456789abcdef'.repeat(3), /pattern/],
    ['password1'.repeat(5) + '!', /pattern/],
    ['changeme'.repeat(4) + '1', /pattern/],
    ['keyledger-pepper-keyledger-pepper', /pattern/],
    ['a'.repeat(32) + 'bcdefgh', /pattern/],
    ['0123456789abcdefghijklmnopqrstuvwxyz', /consecutive/],
    ['qrstuvwxyzQRSTUVWXYZ9876543210jklmnop', /consecutive/],
    ['CHANGE_ME_TO_A_LONG_RANDOM_STRING', /placeholder/],
    ['my-company-production-secret-2026!', /placeholder/],
  ];
  for (const [pepper, reason] of weak) assert.match(pepperWeakness(pepper) ?? 'accepted', reason, pepper);
});
