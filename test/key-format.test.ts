import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { generateKey, hashKey, hashKeyLatin1, isWellFormedKey, parseKey } from '../src/auth/key-format';

/** The hot-path forms of key parsing and hashing must agree exactly with their plain definitions. */

test('hashKey is HMAC-SHA256 under the pepper, whatever the pepper (short, block-sized, long, non-ASCII)', () => {
  const peppers = ['pep', 'x'.repeat(64), 'y'.repeat(65), randomBytes(32).toString('hex'), randomBytes(48).toString('base64'), 'ünïcödé pepper ☃', '\u00ff'.repeat(70)];
  const messages = [generateKey('kl'), generateKey('acme'), 'é☃', ''];
  for (const pepper of peppers) {
    for (const message of messages) {
      const expected = createHmac('sha256', pepper).update(message).digest();
      assert.deepEqual(hashKey(pepper, message), expected, `pepper ${JSON.stringify(pepper)}`);
      assert.equal(hashKeyLatin1(pepper, message), expected.toString('latin1'));
    }
  }
});

test('isWellFormedKey agrees with parseKey: every generated key passes, any changed character fails', () => {
  for (let i = 0; i < 2000; i++) {
    const key = generateKey(i % 2 ? 'kl' : 'svc1');
    assert.ok(isWellFormedKey(key) && parseKey(key), key);
    const at = i % key.length;
    const changed = key.slice(0, at) + (key[at] === 'A' ? 'B' : 'A') + key.slice(at + 1);
    if (changed === key) continue;
    assert.equal(isWellFormedKey(changed), false, changed);
    assert.equal(parseKey(changed), null, changed);
  }
  for (const bad of ['', 'kl_', `kl_${'a'.repeat(48)}`, `KL_${'a'.repeat(49)}`, `kl-${'a'.repeat(49)}`, `kl_${'a'.repeat(49)} `]) {
    assert.equal(isWellFormedKey(bad), false, bad);
  }
});
