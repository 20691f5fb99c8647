import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  KtCreateKeyDocument,
  KtCreateRoleDocument,
  KtDisableKeyDocument,
  KtEnableKeyDocument,
  KtKeyDocument,
  KtKeysDocument,
  KtRevokeAllKeysDocument,
  KtRevokeKeyDocument,
  KtRotateKeyDocument,
  KtUnassignRoleDocument,
  KtUpdateKeyDocument,
  KtUserKeysDocument,
  KtVerifyDocument,
  KtVerifyManyDocument,
  KtViewerDocument,
  type ApiKeyFilter,
  type CreateApiKeyInput,
  type UpdateApiKeyInput,
} from './generated/graphql';
import { roleIdByName, unique } from './helpers/fixtures';
import {
  auditEvents,
  countRows,
  createHuman,
  createKey,
  createServiceAccount,
  expectAudit,
  expectBadInput,
  expectError,
  pollUntil,
  principalWithRoles,
  verify,
  viewerOf,
  type KeyNode,
  type KeyPrincipal,
} from './helpers/key-principals';
import { postGraphQL, startTestServer, type GraphQLResponse, type TestServer } from './helpers/server';
import { KeyDisabledBy1733500000000 } from '../migrations/1733500000000-key-disabled-by';

let t: TestServer;
let admin: KeyPrincipal;
let verifier: KeyPrincipal;
let memberRoleId: string;

before(async () => {
  t = await startTestServer();
  admin = await viewerOf(t, t.adminKey);
  verifier = await principalWithRoles(t, ['verifier']);
  memberRoleId = await roleIdByName(t, 'member');
});
after(() => t.close());

const inDays = (days: number): string => new Date(Date.now() + days * 86_400_000).toISOString();

async function readKey(id: string, as: string = t.adminKey): Promise<KeyNode> {
  const data = await t.ok(as, KtKeyDocument, { id });
  assert.ok(data.apiKey, `key ${id} is readable`);
  return data.apiKey;
}

async function listKeys(filter: ApiKeyFilter, as: string = t.adminKey, first = 100) {
  return (await t.ok(as, KtKeysDocument, { filter, first })).apiKeys;
}

/** Rows that a rejected createApiKey must not have written. */
async function keyWrites(): Promise<{ keys: number; keyRoles: number; createEvents: number }> {
  return {
    keys: await countRows(t, 'api_keys'),
    keyRoles: await countRows(t, 'api_key_roles'),
    createEvents: await countRows(t, 'audit_events', `action = 'key.create'`),
  };
}

test('createApiKey returns the secret once; start is the prefix plus four characters', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'secret-owner');
  const { secret, key } = await createKey(t, { ownerId, name: 'billing', permissions: ['keys:own'] });

  assert.match(secret, /^kl_[0-9A-Za-z]{49}$/, 'default prefix kl, 43 random + 6 checksum characters');
  assert.equal(key.start, `kl_${secret.slice(3, 7)}`);
  assert.ok(secret.startsWith(key.start), 'start is a prefix of the secret');
  assert.equal(key.status, 'ACTIVE');
  assert.equal(key.owner.id, ownerId);
  assert.equal(key.createdBy?.id, admin.userId);

  // Afterwards no read exposes the secret (or its random part) in any field.
  const hidden = [secret, secret.slice(3), secret.slice(7, 30)];
  const reads = [
    await t.request(t.adminKey, KtKeyDocument, { id: key.id }),
    await t.request(t.adminKey, KtKeysDocument, { filter: { ownerId }, first: 10 }),
    await t.request(t.adminKey, KtUserKeysDocument, { id: ownerId }),
  ];
  for (const read of reads) {
    assert.equal(read.errors, undefined, JSON.stringify(read.errors));
    const text = JSON.stringify(read.data);
    assert.ok(text.includes(key.id), 'the read does return the key');
    for (const part of hidden) assert.ok(!text.includes(part), `a read exposes the secret: ${text}`);
  }

  const event = await expectAudit(t, { action: 'key.create', targetId: key.id, actor: admin });
  assert.ok(!JSON.stringify(event.details).includes(secret.slice(3)), 'key.create details hold no secret');

  // The new key works.
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'VALID');
});

test('createApiKey with a custom prefix', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'prefix-owner');
  const { secret, key } = await createKey(t, { ownerId, name: 'acme', prefix: 'acme2' });
  assert.match(secret, /^acme2_[0-9A-Za-z]{49}$/);
  assert.equal(key.start, `acme2_${secret.slice(6, 10)}`);
  assert.ok(secret.startsWith(key.start));
  const result = await verify(t, verifier.key, { key: secret });
  assert.equal(result.code, 'VALID');
  assert.equal(result.keyId, key.id);
});

test('createApiKey bad input is BAD_USER_INPUT naming the field, and nothing is written', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'bad-input-owner');
  const cases: Array<[string, Partial<CreateApiKeyInput>, RegExp]> = [
    ['CIDR with too many bits', { allowedCidrs: ['10.0.0.0/33'] }, /^allowedCidrs/],
    ['not a CIDR', { allowedCidrs: ['10.0.0.0/8', 'not-a-network'] }, /^allowedCidrs/],
    ['IPv6 CIDR with too many bits', { allowedCidrs: ['2001:db8::/129'] }, /^allowedCidrs/],
    ['past expiresAt', { expiresAt: new Date(Date.now() - 60_000).toISOString() }, /^expiresAt$/],
    ['zero rateLimit.limit', { rateLimit: { limit: 0, windowSeconds: 60 } }, /^rateLimit(\.limit)?$/],
    ['negative rateLimit.limit', { rateLimit: { limit: -5, windowSeconds: 60 } }, /^rateLimit(\.limit)?$/],
    ['zero rateLimit.windowSeconds', { rateLimit: { limit: 5, windowSeconds: 0 } }, /^rateLimit(\.windowSeconds)?$/],
    ['negative rateLimit.windowSeconds', { rateLimit: { limit: 5, windowSeconds: -60 } }, /^rateLimit(\.windowSeconds)?$/],
    ['negative remaining', { remaining: -1 }, /^remaining$/],
    ['zero refill.amount', { remaining: 5, refill: { amount: 0, intervalSeconds: 60 } }, /^refill(\.amount)?$/],
    ['zero refill.intervalSeconds', { remaining: 5, refill: { amount: 5, intervalSeconds: 0 } }, /^refill(\.intervalSeconds)?$/],
    ['unknown roleId', { roleIds: [randomUUID()] }, /^roleIds$/],
    ['roleId that is not an id', { roleIds: ['nope'] }, /^roleIds$/],
    ['unknown ownerId', { ownerId: randomUUID() }, /^ownerId$/],
    ['name over 200 characters', { name: 'n'.repeat(201) }, /^name$/],
    ['empty name', { name: '   ' }, /^name$/],
    ['metadata over 8 KiB', { metadata: { blob: 'x'.repeat(8300) } }, /^metadata$/],
    ['prefix A_B', { prefix: 'A_B' }, /^prefix$/],
    ['prefix x', { prefix: 'x' }, /^prefix$/],
    ['prefix of 13 characters', { prefix: 'abcdefghijklm' }, /^prefix$/],
    ['upper-case prefix', { prefix: 'KL' }, /^prefix$/],
  ];
  const before = await keyWrites();
  for (const [label, partial, field] of cases) {
    const input: CreateApiKeyInput = { ownerId, name: 'bad', ...partial };
    const response = await t.request(t.adminKey, KtCreateKeyDocument, { input });
    try {
      expectBadInput(response, field);
    } catch (error) {
      throw new Error(`${label}: ${(error as Error).message}`);
    }
    assert.deepEqual(await keyWrites(), before, `${label}: nothing written`);
  }

  // The limits are limits, not typos: just under them is accepted.
  const ok = await createKey(t, {
    ownerId,
    name: 'n'.repeat(200),
    prefix: 'abcdefghijkl',
    metadata: { blob: 'x'.repeat(8000) },
    allowedCidrs: ['10.0.0.0/8', '2001:db8::/32', '192.0.2.7'],
    remaining: 0,
  });
  assert.equal(ok.key.name.length, 200);
  assert.equal((await keyWrites()).keys, before.keys + 1);
});

test('updateApiKey bad input is BAD_USER_INPUT naming the field, and the key is unchanged', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'bad-update-owner');
  const { key } = await createKey(t, { ownerId, name: 'stable', remaining: 5, allowedCidrs: ['10.0.0.0/8'] });
  const cases: Array<[string, UpdateApiKeyInput, RegExp]> = [
    ['invalid CIDR', { name: 'changed', allowedCidrs: ['300.0.0.0/8'] }, /^allowedCidrs/],
    ['negative remaining', { name: 'changed', remaining: -3 }, /^remaining$/],
    ['zero rateLimit.limit', { name: 'changed', rateLimit: { limit: 0, windowSeconds: 10 } }, /^rateLimit(\.limit)?$/],
    ['past expiresAt', { name: 'changed', expiresAt: new Date(Date.now() - 1000).toISOString() }, /^expiresAt$/],
    ['unknown roleId', { name: 'changed', roleIds: [randomUUID()] }, /^roleIds$/],
    ['name over 200 characters', { name: 'n'.repeat(201) }, /^name$/],
    ['metadata over 8 KiB', { name: 'changed', metadata: { blob: 'y'.repeat(9000) } }, /^metadata$/],
  ];
  for (const [label, input, field] of cases) {
    const response = await t.request(t.adminKey, KtUpdateKeyDocument, { id: key.id, input });
    try {
      expectBadInput(response, field);
    } catch (error) {
      throw new Error(`${label}: ${(error as Error).message}`);
    }
  }
  const after = await readKey(key.id);
  assert.equal(after.name, 'stable');
  assert.equal(after.remaining, 5);
  assert.deepEqual(after.allowedCidrs, ['10.0.0.0/8']);
  assert.equal(after.updatedAt, key.updatedAt);
  assert.equal((await auditEvents(t, { actions: ['key.update'], targetId: key.id })).length, 0, 'no key.update event');
});

test('updateApiKey changes settings and writes key.update with before and after', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'update-owner');
  const { secret, key } = await createKey(t, { ownerId, name: 'before-name', permissions: ['keys:own'], remaining: 5 });
  const expiresAt = inDays(2);
  const updated = (
    await t.ok(t.adminKey, KtUpdateKeyDocument, {
      id: key.id,
      input: {
        name: 'after-name',
        allowedCidrs: ['192.0.2.0/24'],
        rateLimit: { limit: 10, windowSeconds: 60 },
        remaining: 7,
        metadata: { tier: 'gold' },
        expiresAt,
        permissions: [],
      },
    })
  ).updateApiKey;
  const checkSettings = (k: KeyNode) => {
    assert.equal(k.name, 'after-name');
    assert.deepEqual(k.allowedCidrs, ['192.0.2.0/24']);
    assert.deepEqual(k.rateLimit, { limit: 10, windowSeconds: 60 });
    assert.equal(k.remaining, 7);
    assert.deepEqual(k.metadata, { tier: 'gold' });
    assert.equal(new Date(k.expiresAt!).getTime(), new Date(expiresAt).getTime());
    assert.deepEqual(k.grantedPermissions, []);
    assert.deepEqual(k.permissions, []);
    assert.equal(k.status, 'ACTIVE');
  };
  checkSettings(updated);
  checkSettings(await readKey(key.id));
  assert.ok(new Date(updated.updatedAt).getTime() >= new Date(key.updatedAt).getTime());

  // The new settings apply to verification: the allowlist now names 192.0.2.0/24.
  assert.equal((await verify(t, verifier.key, { key: secret, ip: '198.51.100.1' })).code, 'IP_NOT_ALLOWED');
  const ok = await verify(t, verifier.key, { key: secret, ip: '192.0.2.44' });
  assert.equal(ok.code, 'VALID');
  assert.equal(ok.remaining, 6);

  const event = await expectAudit(t, { action: 'key.update', targetId: key.id, actor: admin });
  const details = event.details as { before?: Record<string, unknown>; after?: Record<string, unknown> };
  assert.ok(details.before && details.after, `before/after in ${JSON.stringify(event.details)}`);
  assert.equal(details.before.name, 'before-name');
  assert.equal(details.after.name, 'after-name');
  assert.equal(details.before.remaining, 5);
  assert.equal(details.after.remaining, 7);
  assert.deepEqual(details.after.allowedCidrs, ['192.0.2.0/24']);
  assert.deepEqual(details.after.rateLimit, { limit: 10, windowSeconds: 60 });
});

test('updateApiKey leaves the settings it does not name unchanged', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'partial-owner');
  const expiresAt = inDays(3);
  const { secret, key } = await createKey(t, {
    ownerId,
    name: 'partial',
    permissions: ['keys:own'],
    expiresAt,
    allowedCidrs: ['10.0.0.0/8'],
    rateLimit: { limit: 9, windowSeconds: 90 },
    remaining: 4,
    refill: { amount: 4, intervalSeconds: 3600 },
    metadata: { keep: true },
  });
  const renamed = (await t.ok(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { name: 'partial-renamed' } })).updateApiKey;
  for (const k of [renamed, await readKey(key.id)]) {
    assert.equal(k.name, 'partial-renamed');
    assert.deepEqual(k.grantedPermissions, ['keys:own']);
    assert.equal(new Date(k.expiresAt!).getTime(), new Date(expiresAt).getTime());
    assert.deepEqual(k.allowedCidrs, ['10.0.0.0/8']);
    assert.deepEqual(k.rateLimit, { limit: 9, windowSeconds: 90 });
    assert.equal(k.remaining, 4);
    assert.equal(k.refill?.amount, 4);
    assert.deepEqual(k.metadata, { keep: true });
  }
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'IP_NOT_ALLOWED', 'the allowlist still applies');
  const event = await expectAudit(t, { action: 'key.update', targetId: key.id, actor: admin });
  assert.deepEqual(event.details?.after, { name: 'partial-renamed' }, 'only the name changed');
});

test('disable makes a key DISABLED (verifies DISABLED); enable makes it ACTIVE again; both audited', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'toggle-owner');
  const { secret, key } = await createKey(t, { ownerId, name: 'toggle' });

  const disabled = (await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id })).disableApiKey;
  assert.equal(disabled.status, 'DISABLED');
  assert.equal((await readKey(key.id)).status, 'DISABLED');
  const result = await verify(t, verifier.key, { key: secret });
  assert.equal(result.code, 'DISABLED');
  assert.equal(result.valid, false);
  await expectAudit(t, { action: 'key.disable', targetId: key.id, actor: admin });

  const enabled = (await t.ok(t.adminKey, KtEnableKeyDocument, { id: key.id })).enableApiKey;
  assert.equal(enabled.status, 'ACTIVE');
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'VALID');
  await expectAudit(t, { action: 'key.enable', targetId: key.id, actor: admin });
});

test('revokeApiKey is permanent: REVOKED with who, when and why; enable, update, rotate and revoke are CONFLICT', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'revoke-owner');
  const { secret, key } = await createKey(t, { ownerId, name: 'to-revoke' });
  const startedAt = Date.now();
  const revoked = (await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'leaked in a CI log' })).revokeApiKey;
  const endedAt = Date.now();
  for (const k of [revoked, await readKey(key.id)]) {
    assert.equal(k.status, 'REVOKED');
    assert.equal(k.revokedBy?.id, admin.userId);
    assert.equal(k.revokeReason, 'leaked in a CI log');
    assert.ok(k.revokedAt, 'revokedAt is set');
    const at = new Date(k.revokedAt).getTime();
    assert.ok(at >= startedAt - 1000 && at <= endedAt + 1000, `revokedAt ${k.revokedAt} is now`);
  }
  // Effective for the very next verification.
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'REVOKED');

  const event = await expectAudit(t, { action: 'key.revoke', targetId: key.id, actor: admin });
  assert.equal((event.details as { reason?: unknown }).reason, 'leaked in a CI log');

  expectError(await t.request(t.adminKey, KtEnableKeyDocument, { id: key.id }), 'CONFLICT');
  expectError(await t.request(t.adminKey, KtUpdateKeyDocument, { id: key.id, input: { name: 'resurrected' } }), 'CONFLICT');
  expectError(await t.request(t.adminKey, KtRotateKeyDocument, { id: key.id, gracePeriodSeconds: 0 }), 'CONFLICT');
  expectError(await t.request(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'again' }), 'CONFLICT');

  const after = await readKey(key.id);
  assert.equal(after.status, 'REVOKED');
  assert.equal(after.name, 'to-revoke');
  assert.equal(after.revokeReason, 'leaked in a CI log');
  assert.equal(after.replacedBy, null, 'no successor was issued');
  assert.equal((await auditEvents(t, { actions: ['key.revoke'], targetId: key.id })).length, 1);
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'REVOKED');
});

test("revokeAllApiKeys revokes the user's and its service accounts' keys, not others', and returns the count", async () => {
  const humanId = await createHuman(t, [memberRoleId], 'incident-human');
  const svcId = await createServiceAccount(t, humanId);
  const otherId = await createHuman(t, [memberRoleId], 'bystander');
  const otherSvcId = await createServiceAccount(t, otherId);
  const mine = [
    await createKey(t, { ownerId: humanId, name: 'h1' }),
    await createKey(t, { ownerId: humanId, name: 'h2' }),
    await createKey(t, { ownerId: svcId, name: 's1' }),
  ];
  const others = [await createKey(t, { ownerId: otherId, name: 'o1' }), await createKey(t, { ownerId: otherSvcId, name: 'o2' })];

  const count = (await t.ok(t.adminKey, KtRevokeAllKeysDocument, { userId: humanId, reason: 'incident 42' })).revokeAllApiKeys;
  assert.equal(count, 3);
  for (const { key, secret } of mine) {
    const k = await readKey(key.id);
    assert.equal(k.status, 'REVOKED', `${k.name} revoked`);
    assert.equal(k.revokeReason, 'incident 42');
    assert.equal(k.revokedBy?.id, admin.userId);
    assert.equal((await verify(t, verifier.key, { key: secret })).code, 'REVOKED');
  }
  for (const { key, secret } of others) {
    assert.equal((await readKey(key.id)).status, 'ACTIVE', `${key.name} untouched`);
    assert.equal((await verify(t, verifier.key, { key: secret })).code, 'VALID');
  }

  const event = await expectAudit(t, { action: 'key.revoke_all', targetId: humanId, actor: admin });
  assert.equal((event.details as { reason?: unknown }).reason, 'incident 42');
});

test('rotateApiKey with grace 0: the old key is EXPIRED at once, the successor verifies VALID with the same settings', async () => {
  const role = (await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('billing'), permissions: ['invoices:*'] } })).createRole;
  const ownerId = await createHuman(t, [memberRoleId, role.id], 'rotate-owner');
  const expiresAt = inDays(7);
  const old = await createKey(t, {
    ownerId,
    name: 'rotating',
    roleIds: [role.id],
    permissions: ['keys:own'],
    expiresAt,
    allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'],
    rateLimit: { limit: 50, windowSeconds: 60 },
    remaining: 40,
    refill: { amount: 10, intervalSeconds: 3600 },
    metadata: { team: 'billing', n: 1 },
  });

  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 0 })).rotateApiKey;
  const successor = rotated.apiKey;
  assert.notEqual(rotated.secret, old.secret);
  assert.notEqual(successor.id, old.key.id);
  assert.match(rotated.secret, /^kl_[0-9A-Za-z]{49}$/);
  assert.ok(rotated.secret.startsWith(successor.start));
  assert.equal(successor.rotatedFrom?.id, old.key.id);
  assert.equal(successor.status, 'ACTIVE');
  // Same settings.
  assert.equal(successor.name, 'rotating');
  assert.equal(successor.owner.id, ownerId);
  assert.deepEqual(successor.roles.map((r) => r.id), [role.id]);
  assert.deepEqual(successor.grantedPermissions, old.key.grantedPermissions);
  assert.deepEqual(successor.permissions, old.key.permissions);
  assert.deepEqual(successor.allowedCidrs, old.key.allowedCidrs);
  assert.deepEqual(successor.rateLimit, { limit: 50, windowSeconds: 60 });
  assert.equal(successor.remaining, 40);
  assert.equal(successor.refill?.amount, 10);
  assert.equal(successor.refill?.intervalSeconds, 3600);
  assert.deepEqual(successor.metadata, { team: 'billing', n: 1 });
  assert.equal(new Date(successor.expiresAt!).getTime(), new Date(expiresAt).getTime());

  const oldNow = await readKey(old.key.id);
  assert.equal(oldNow.status, 'EXPIRED');
  assert.equal(oldNow.replacedBy?.id, successor.id);
  assert.ok(new Date(oldNow.expiresAt!).getTime() <= Date.now(), 'the old key expired at rotation');

  assert.equal((await verify(t, verifier.key, { key: old.secret, ip: '10.1.2.3' })).code, 'EXPIRED');
  const fresh = await verify(t, verifier.key, { key: rotated.secret, ip: '10.1.2.3', permissions: ['invoices:read'] });
  assert.equal(fresh.code, 'VALID');
  assert.equal(fresh.keyId, successor.id);
  assert.equal(fresh.remaining, 39);
  assert.deepEqual(fresh.metadata, { team: 'billing', n: 1 });

  const event = await expectAudit(t, { action: 'key.rotate', targetId: old.key.id, actor: admin });
  assert.equal((event.details as { gracePeriodSeconds?: unknown }).gracePeriodSeconds, 0);

  // gracePeriodSeconds defaults to 0; a negative one is bad input.
  const other = await createKey(t, { ownerId, name: 'default-grace' });
  expectBadInput(await t.request(t.adminKey, KtRotateKeyDocument, { id: other.key.id, gracePeriodSeconds: -1 }), /^gracePeriodSeconds$/);
  await t.ok(t.adminKey, KtRotateKeyDocument, { id: other.key.id });
  assert.equal((await verify(t, verifier.key, { key: other.secret })).code, 'EXPIRED');
});

test('during a rotation grace the old key and its successor share one quota and one rate-limit window', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'shared-budget');
  const old = await createKey(t, { ownerId, name: 'budgeted', permissions: ['keys:own'], remaining: 10, rateLimit: { limit: 6, windowSeconds: 600 } });
  assert.equal((await verify(t, verifier.key, { key: old.secret })).remaining, 9);
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 600 })).rotateApiKey;
  assert.equal(rotated.apiKey.remaining, 9, 'the successor takes over what was left');
  // Alternating between the keys draws on one quota: 8, 7, 6, 5, 4 …
  const seen: Array<[string, number | null | undefined]> = [];
  for (const secret of [old.secret, rotated.secret, old.secret, rotated.secret, old.secret]) {
    const result = await verify(t, verifier.key, { key: secret });
    seen.push([result.code, result.remaining]);
  }
  assert.deepEqual(seen, [['VALID', 8], ['VALID', 7], ['VALID', 6], ['VALID', 5], ['VALID', 4]]);
  // …and one rate-limit window, the one the old key opened before the rotation: 6 in all.
  const limited = await verify(t, verifier.key, { key: rotated.secret });
  assert.equal(limited.code, 'RATE_LIMITED');
  assert.equal((await verify(t, verifier.key, { key: old.secret })).code, 'RATE_LIMITED');
  assert.equal((await readKey(rotated.apiKey.id)).remaining, 4, 'what the successor shows is what is left');
});

test('verifyKeys takes the keys of one line of rotations in input order, as it does one key given twice', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'line-batch');
  const old = await createKey(t, { ownerId, name: 'line-batch', remaining: 50, rateLimit: { limit: 3, windowSeconds: 600 } });
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 600 })).rotateApiKey;
  const inputs = [old.secret, old.secret, rotated.secret, rotated.secret].map((key) => ({ key }));
  const results = (await t.ok(verifier.key, KtVerifyManyDocument, { inputs })).verifyKeys;
  assert.deepEqual(
    results.map((r) => [r.code, r.remaining, r.rateLimit?.remaining]),
    [['VALID', 49, 2], ['VALID', 48, 1], ['VALID', 47, 0], ['RATE_LIMITED', 47, 0]],
    'the earlier inputs get what the line has left',
  );
});

test("each key of a line answers what the line has left, a refused one too; quota and rate-limit settings given for the old key are CONFLICT, null included", async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'line-answers');
  const old = await createKey(t, { ownerId, name: 'line-answers', remaining: 10, rateLimit: { limit: 3, windowSeconds: 600 } });
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 600 })).rotateApiKey;
  const seen: Array<[string, number | null | undefined]> = [];
  for (const secret of [old.secret, rotated.secret, rotated.secret, old.secret]) {
    const result = await verify(t, verifier.key, { key: secret });
    seen.push([result.code, result.remaining]);
  }
  assert.deepEqual(seen, [['VALID', 9], ['VALID', 8], ['VALID', 7], ['RATE_LIMITED', 7]]);

  for (const input of [{ remaining: null }, { refill: null }, { remaining: 7 }, { rateLimit: null }]) {
    const refused = await t.request(t.adminKey, KtUpdateKeyDocument, { id: old.key.id, input });
    expectError(refused, 'CONFLICT');
    assert.match(String(refused.errors?.[0]?.message), /successor/, JSON.stringify(input));
  }
  const after = await readKey(old.key.id);
  assert.equal(after.remaining, 7, 'still the line\'s quota');
  assert.deepEqual(after.rateLimit, { limit: 3, windowSeconds: 600 });
});

test('rotating the successor during a grace moves the old key onto the newest quota: two rotations spend nothing twice', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'twice-rotated');
  const first = await createKey(t, { ownerId, name: 'four', remaining: 4 });
  assert.equal((await verify(t, verifier.key, { key: first.secret })).remaining, 3);
  const second = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: first.key.id, gracePeriodSeconds: 600 })).rotateApiKey;
  assert.equal((await verify(t, verifier.key, { key: first.secret })).remaining, 2, 'the old key draws on its successor (and is cached so)');
  const third = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: second.apiKey.id, gracePeriodSeconds: 600 })).rotateApiKey;
  assert.equal(third.apiKey.remaining, 2);
  const codes: string[] = [];
  for (const secret of [first.secret, third.secret, first.secret, third.secret]) codes.push((await verify(t, verifier.key, { key: secret })).code);
  assert.deepEqual(codes, ['VALID', 'VALID', 'USAGE_EXCEEDED', 'USAGE_EXCEEDED'], 'four verifications from a quota of four, in all');
});

test('rotation grace boundary: the old key verifies VALID until now + grace, then EXPIRED', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'grace-owner');
  const old = await createKey(t, { ownerId, name: 'graceful' });
  const rotateStarted = Date.now();
  const rotated = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 2 })).rotateApiKey;
  const rotateEnded = Date.now();

  // Inside the grace period: still good.
  const early = await verify(t, verifier.key, { key: old.secret });
  assert.ok(Date.now() < rotateStarted + 2000, 'the early check ran inside the grace period');
  assert.equal(early.code, 'VALID');
  const during = await readKey(old.key.id);
  assert.equal(during.status, 'ACTIVE');
  assert.equal(during.replacedBy?.id, rotated.apiKey.id);
  const graceEnd = new Date(during.expiresAt!).getTime();
  assert.ok(graceEnd >= rotateStarted + 2000 - 5 && graceEnd <= rotateEnded + 2000 + 5, `expiresAt is rotation + 2 s: ${during.expiresAt}`);

  // Poll until it stops verifying: it must turn EXPIRED, and not before the grace period ended.
  const seen: string[] = [];
  const { value, at } = await pollUntil(
    async () => (await verify(t, verifier.key, { key: old.secret })).code,
    (code) => {
      seen.push(code);
      return code !== 'VALID';
    },
    { timeoutMs: 6000, intervalMs: 100, what: 'the rotated key to expire' },
  );
  assert.equal(value, 'EXPIRED', `codes seen: ${seen.join(',')}`);
  assert.ok(at >= rotateStarted + 2000, `EXPIRED only after the grace period (${at - rotateStarted} ms after rotation)`);
  assert.equal((await readKey(old.key.id)).status, 'EXPIRED');
  assert.equal((await verify(t, verifier.key, { key: rotated.secret })).code, 'VALID', 'the successor keeps working');

  const event = await expectAudit(t, { action: 'key.rotate', targetId: old.key.id, actor: admin });
  assert.equal((event.details as { gracePeriodSeconds?: unknown }).gracePeriodSeconds, 2);
});

test('rotating the same key twice is CONFLICT', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'twice-owner');
  const old = await createKey(t, { ownerId, name: 'once' });
  const first = (await t.ok(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 60 })).rotateApiKey;
  // Still inside its grace period, so the conflict is about the existing successor, not expiry.
  assert.equal((await verify(t, verifier.key, { key: old.secret })).code, 'VALID');
  expectError(await t.request(t.adminKey, KtRotateKeyDocument, { id: old.key.id, gracePeriodSeconds: 60 }), 'CONFLICT');
  // Two rotations racing for the successor: exactly one wins.
  const racer = await createKey(t, { ownerId, name: 'raced' });
  const race = await Promise.all([
    t.request(t.adminKey, KtRotateKeyDocument, { id: racer.key.id, gracePeriodSeconds: 60 }),
    t.request(t.adminKey, KtRotateKeyDocument, { id: racer.key.id, gracePeriodSeconds: 60 }),
  ]);
  assert.equal(race.filter((r) => !r.errors).length, 1, `one rotation wins: ${JSON.stringify(race.map((r) => r.errors))}`);
  assert.equal(race.filter((r) => r.errors?.[0]?.extensions?.code === 'CONFLICT').length, 1);
  assert.equal(await countRows(t, 'api_keys', `rotated_from_id = '${racer.key.id}'`), 1);
  assert.equal((await readKey(old.key.id)).replacedBy?.id, first.apiKey.id);
  assert.equal(await countRows(t, 'api_keys', `rotated_from_id = '${old.key.id}'`), 1, 'one successor only');
  assert.equal((await auditEvents(t, { actions: ['key.rotate'], targetId: old.key.id })).length, 1);
});

test('a key past expiresAt is EXPIRED without any job', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'expiry-owner');
  const expiresAt = new Date(Date.now() + 1500).toISOString();
  const { secret, key } = await createKey(t, { ownerId, name: 'short-lived', expiresAt });
  assert.equal(key.status, 'ACTIVE');
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'VALID');
  assert.deepEqual((await listKeys({ ownerId, status: 'ACTIVE' })).nodes.map((k) => k.id), [key.id]);

  const { at } = await pollUntil(
    async () => (await readKey(key.id)).status,
    (status) => status !== 'ACTIVE',
    { timeoutMs: 5000, intervalMs: 100, what: 'the key to expire' },
  );
  assert.ok(at >= new Date(expiresAt).getTime(), 'not EXPIRED before expiresAt');
  assert.equal((await readKey(key.id)).status, 'EXPIRED');
  assert.equal((await verify(t, verifier.key, { key: secret })).code, 'EXPIRED');
  assert.deepEqual((await listKeys({ ownerId, status: 'EXPIRED' })).nodes.map((k) => k.id), [key.id]);
  assert.equal((await listKeys({ ownerId, status: 'ACTIVE' })).totalCount, 0);
  const userKeys = (await t.ok(t.adminKey, KtUserKeysDocument, { id: ownerId, status: 'EXPIRED' })).user!.apiKeys;
  assert.deepEqual(userKeys.nodes.map((k) => k.id), [key.id]);

  // Its audit trail names the statuses the API showed, not what is stored behind EXPIRED.
  assert.equal((await t.ok(t.adminKey, KtDisableKeyDocument, { id: key.id })).disableApiKey.status, 'EXPIRED');
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: key.id, reason: 'expired and unwanted' });
  const statuses = async (action: string) => {
    const [event] = await auditEvents(t, { actions: [action], targetId: key.id });
    const details = event!.details as { before: { status: string }; after: { status: string } };
    return [details.before.status, details.after.status];
  };
  assert.deepEqual(await statuses('key.disable'), ['EXPIRED', 'EXPIRED']);
  assert.deepEqual(await statuses('key.revoke'), ['EXPIRED', 'REVOKED']);
});

test("keys:own: a member manages its own and its service account's keys, and every transition is audited", async () => {
  const member = await principalWithRoles(t, ['member'], 'own-member');
  const svcId = await createServiceAccount(t, member.userId, [], 'own-svc');

  const own = (await t.ok(member.key, KtCreateKeyDocument, { input: { name: 'mine', permissions: ['keys:own'] } })).createApiKey;
  assert.equal(own.apiKey.owner.id, member.userId, 'owner defaults to the caller');
  assert.equal(own.apiKey.createdBy?.id, member.userId);
  assert.deepEqual(own.apiKey.permissions, ['keys:own']);
  const forSvc = (await t.ok(member.key, KtCreateKeyDocument, { input: { ownerId: svcId, name: 'svc-key' } })).createApiKey;
  assert.equal(forSvc.apiKey.owner.id, svcId);

  for (const created of [own, forSvc]) {
    const id = created.apiKey.id;
    await expectAudit(t, { action: 'key.create', targetId: id, actor: member });
    assert.equal((await readKey(id, member.key)).id, id, 'readable with keys:own');

    const updated = (await t.ok(member.key, KtUpdateKeyDocument, { id, input: { name: `${created.apiKey.name}-renamed` } })).updateApiKey;
    assert.equal(updated.name, `${created.apiKey.name}-renamed`);
    const update = await expectAudit(t, { action: 'key.update', targetId: id, actor: member });
    assert.deepEqual(update.details?.before, { name: created.apiKey.name });
    assert.deepEqual(update.details?.after, { name: `${created.apiKey.name}-renamed` });

    assert.equal((await t.ok(member.key, KtDisableKeyDocument, { id })).disableApiKey.status, 'DISABLED');
    await expectAudit(t, { action: 'key.disable', targetId: id, actor: member });
    assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id })).enableApiKey.status, 'ACTIVE');
    await expectAudit(t, { action: 'key.enable', targetId: id, actor: member });
  }

  // The member rotates its own key, then revokes the successor and the service account's key.
  const rotated = (await t.ok(member.key, KtRotateKeyDocument, { id: own.apiKey.id, gracePeriodSeconds: 30 })).rotateApiKey;
  assert.equal(rotated.apiKey.owner.id, member.userId);
  const rotate = await expectAudit(t, { action: 'key.rotate', targetId: own.apiKey.id, actor: member });
  assert.equal(rotate.details?.gracePeriodSeconds, 30);

  const revoked = (await t.ok(member.key, KtRevokeKeyDocument, { id: rotated.apiKey.id, reason: 'no longer needed' })).revokeApiKey;
  assert.equal(revoked.status, 'REVOKED');
  assert.equal(revoked.revokedBy?.id, member.userId);
  const revoke = await expectAudit(t, { action: 'key.revoke', targetId: rotated.apiKey.id, actor: member });
  assert.equal(revoke.details?.reason, 'no longer needed');
  assert.equal((await verify(t, verifier.key, { key: rotated.secret })).code, 'REVOKED');

  // The member's listing: only its own and its service account's keys.
  const listed = await listKeys({}, member.key);
  const owners = new Set(listed.nodes.map((k) => k.owner.id));
  for (const owner of owners) assert.ok(owner === member.userId || owner === svcId, `foreign owner ${owner} listed`);
  const ids = listed.nodes.map((k) => k.id);
  for (const id of [member.keyId, own.apiKey.id, rotated.apiKey.id, forSvc.apiKey.id]) assert.ok(ids.includes(id), `${id} listed`);
  assert.equal(listed.totalCount, 4);

  // Emergency revocation of its own service account's keys is also its to do.
  const count = (await t.ok(member.key, KtRevokeAllKeysDocument, { userId: svcId, reason: 'svc retired' })).revokeAllApiKeys;
  assert.equal(count, 1);
  const all = await expectAudit(t, { action: 'key.revoke_all', targetId: svcId, actor: member });
  assert.equal(all.details?.reason, 'svc retired');
  assert.equal((await readKey(forSvc.apiKey.id)).status, 'REVOKED');
});


test("keys:own cannot undo a disable made by someone else; keys:write and the one who disabled it can", async () => {
  const member = await principalWithRoles(t, ['member'], 'undo-member');
  const keyManager = await principalWithRoles(t, ['key-manager'], 'undo-manager');
  // No permissions: a key-manager, who lacks keys:own, may enable it without escalating.
  const mine = (await createKey(t, { name: 'disabled by admin', permissions: [] }, member.key)).key;
  const deniedBefore = (await auditEvents(t, { actions: ['authz.denied'] })).length;

  // An administrator's disable (incident response) stands against the owner.
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: mine.id });
  const disabledBy = async () =>
    ((await postGraphQL<{ apiKey: { disabledBy: { id: string } | null } }>(t.url, t.adminKey, 'query($id: ID!) { apiKey(id: $id) { disabledBy { id } } }', { id: mine.id })).data?.apiKey.disabledBy ?? null);
  assert.deepEqual(await disabledBy(), { id: (await viewerOf(t, t.adminKey)).userId });
  expectError(await t.request(member.key, KtEnableKeyDocument, { id: mine.id }), 'FORBIDDEN');
  assert.equal((await readKey(mine.id)).status, 'DISABLED');
  assert.equal((await auditEvents(t, { actions: ['authz.denied'] })).length, deniedBefore + 1, 'the refusal is audited');
  const [refusal] = await auditEvents(t, { actions: ['authz.denied'], targetId: mine.id });
  assert.deepEqual([refusal?.targetType, refusal?.details?.operation], ['api_key', 'Mutation.enableApiKey'], "in the key's own history");
  assert.equal((await auditEvents(t, { actions: ['key.enable'], targetId: mine.id })).length, 0);
  // keys:write may, without being '*'.
  assert.equal((await t.ok(keyManager.key, KtEnableKeyDocument, { id: mine.id })).enableApiKey.status, 'ACTIVE');
  assert.equal(await disabledBy(), null);

  // The owner's own disable is the owner's to undo, and enabling clears who disabled it.
  await t.ok(member.key, KtDisableKeyDocument, { id: mine.id });
  assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id: mine.id })).enableApiKey.status, 'ACTIVE');
  await t.ok(member.key, KtDisableKeyDocument, { id: mine.id });
  assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id: mine.id })).enableApiKey.status, 'ACTIVE');

  // A service account's key disabled by its human owner: the service account (keys:own) cannot undo it.
  const svcId = await createServiceAccount(t, member.userId, [await roleIdByName(t, 'member')], 'undo-svc');
  const svc = await viewerOf(t, (await createKey(t, { ownerId: svcId, name: 'svc own key', permissions: ['keys:own'] })).secret);
  const svcKey = (await createKey(t, { ownerId: svcId, name: 'svc pipeline key' }, member.key)).key;
  await t.ok(member.key, KtDisableKeyDocument, { id: svcKey.id });
  expectError(await t.request(svc.key, KtEnableKeyDocument, { id: svcKey.id }), 'FORBIDDEN');
  assert.equal((await readKey(svcKey.id)).status, 'DISABLED');
  assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id: svcKey.id })).enableApiKey.status, 'ACTIVE');
  // The service account's own disable is its human owner's to undo…
  await t.ok(svc.key, KtDisableKeyDocument, { id: svcKey.id });
  assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id: svcKey.id })).enableApiKey.status, 'ACTIVE');
  // …and the owner's disable over the account's own takes over: the account cannot undo it.
  await t.ok(svc.key, KtDisableKeyDocument, { id: svcKey.id });
  await t.ok(member.key, KtDisableKeyDocument, { id: svcKey.id });
  expectError(await t.request(svc.key, KtEnableKeyDocument, { id: svcKey.id }), 'FORBIDDEN');
  assert.equal((await t.ok(member.key, KtEnableKeyDocument, { id: svcKey.id })).enableApiKey.status, 'ACTIVE');
  // A responder that happens to be one's own service account is still a responder: its disable of
  // the owner's key stands against the owner.
  const responder = await createServiceAccount(t, member.userId, [await roleIdByName(t, 'key-manager')], 'undo-responder');
  const responderKey = (await createKey(t, { ownerId: responder, name: 'responder key', permissions: ['*'] })).secret;
  await t.ok(responderKey, KtDisableKeyDocument, { id: mine.id });
  expectError(await t.request(member.key, KtEnableKeyDocument, { id: mine.id }), 'FORBIDDEN');
  await t.ok(t.adminKey, KtEnableKeyDocument, { id: mine.id });

  // Disabled by its owner first, then by a responder: the responder's disable is the one that holds.
  await t.ok(member.key, KtDisableKeyDocument, { id: mine.id });
  await t.ok(keyManager.key, KtDisableKeyDocument, { id: mine.id });
  assert.deepEqual(await disabledBy(), { id: keyManager.userId });
  const takeover = (await auditEvents(t, { actions: ['key.disable'], targetId: mine.id })).at(-1)!;
  assert.deepEqual(takeover.details?.after, { status: 'DISABLED', disabledById: keyManager.userId });
  expectError(await t.request(member.key, KtEnableKeyDocument, { id: mine.id }), 'FORBIDDEN');
  // …and a disable by the owner over it changes nothing.
  await t.ok(member.key, KtDisableKeyDocument, { id: mine.id });
  assert.deepEqual(await disabledBy(), { id: keyManager.userId });
  expectError(await t.request(member.key, KtEnableKeyDocument, { id: mine.id }), 'FORBIDDEN');

  // Revoked, a key is no longer disabled by anyone.
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: mine.id, reason: 'done' });
  assert.equal(await disabledBy(), null);
});

test('keys disabled before the disabledBy column take it from their latest key.disable event', async () => {
  const member = await principalWithRoles(t, ['member'], 'backfill-member');
  const mine = (await createKey(t, { name: 'disabled before the upgrade', permissions: ['keys:own'] }, member.key)).key;
  await t.ok(member.key, KtDisableKeyDocument, { id: mine.id });
  await t.ok(member.key, KtEnableKeyDocument, { id: mine.id });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: mine.id });
  const runner = t.server.dataSource.createQueryRunner();
  try {
    await runner.query('ALTER TABLE api_keys DROP COLUMN disabled_by_id');
    await new KeyDisabledBy1733500000000().up(runner);
  } finally {
    await runner.release();
  }
  const [row] = await t.db.query<{ disabled_by_id: string | null }>(`SELECT disabled_by_id FROM api_keys WHERE id = $1`, [mine.id]);
  const admin = await viewerOf(t, t.adminKey);
  assert.equal(row!.disabled_by_id, admin.userId, "the administrator's later disable, not the member's earlier one");
  expectError(await t.request(member.key, KtEnableKeyDocument, { id: mine.id }), 'FORBIDDEN');
});
test("keys:own: another user's keys are FORBIDDEN and untouched", async () => {
  const member = await principalWithRoles(t, ['member'], 'nosy-member');
  const other = await principalWithRoles(t, ['member'], 'other-member');
  const otherSvc = await createServiceAccount(t, other.userId, [], 'other-svc');
  const target = await createKey(t, { ownerId: other.userId, name: 'not-yours' });
  const beforeKeys = await countRows(t, 'api_keys');

  const attempts: Array<[string, Promise<GraphQLResponse<unknown>>]> = [
    ['create for another user', t.request(member.key, KtCreateKeyDocument, { input: { ownerId: other.userId, name: 'sneaky' } })],
    ["create for another user's service account", t.request(member.key, KtCreateKeyDocument, { input: { ownerId: otherSvc, name: 'sneaky' } })],
    ['update', t.request(member.key, KtUpdateKeyDocument, { id: target.key.id, input: { name: 'hijacked' } })],
    ['disable', t.request(member.key, KtDisableKeyDocument, { id: target.key.id })],
    ['enable', t.request(member.key, KtEnableKeyDocument, { id: target.key.id })],
    ['rotate', t.request(member.key, KtRotateKeyDocument, { id: target.key.id, gracePeriodSeconds: 0 })],
    ['revoke', t.request(member.key, KtRevokeKeyDocument, { id: target.key.id, reason: 'mine now' })],
    ['revoke all', t.request(member.key, KtRevokeAllKeysDocument, { userId: other.userId, reason: 'mine now' })],
    ['read', t.request(member.key, KtKeyDocument, { id: target.key.id })],
  ];
  for (const [label, attempt] of attempts) {
    try {
      expectError(await attempt, 'FORBIDDEN');
    } catch (error) {
      throw new Error(`${label}: ${(error as Error).message}`);
    }
  }

  const listed = await listKeys({ ownerId: other.userId }, member.key);
  assert.equal(listed.totalCount, 0, "another user's keys are not listed");
  assert.deepEqual(listed.nodes, []);
  const all = await listKeys({}, member.key);
  assert.ok(all.nodes.every((k) => k.owner.id === member.userId), 'only own keys listed');

  const after = await readKey(target.key.id);
  assert.equal(after.status, 'ACTIVE');
  assert.equal(after.name, 'not-yours');
  assert.equal(after.replacedBy, null);
  assert.equal(await countRows(t, 'api_keys'), beforeKeys, 'no key was created');
  assert.equal((await verify(t, verifier.key, { key: target.secret })).code, 'VALID');
  assert.equal((await verify(t, verifier.key, { key: other.key })).code, 'VALID', 'revoke all did nothing');
});

test('no escalation: a member cannot grant a key more than it holds', async () => {
  const member = await principalWithRoles(t, ['member'], 'greedy-member');
  const adminRoleId = await roleIdByName(t, 'admin');
  const verifierRoleId = await roleIdByName(t, 'verifier');
  const before = await countRows(t, 'api_keys');
  const attempts: Array<[string, CreateApiKeyInput]> = [
    ['users:read', { name: 'esc', permissions: ['users:read'] }],
    ['*', { name: 'esc', permissions: ['*'] }],
    ['keys:*', { name: 'esc', permissions: ['keys:*'] }],
    ['admin role', { name: 'esc', roleIds: [adminRoleId] }],
    ['verifier role', { name: 'esc', roleIds: [verifierRoleId] }],
  ];
  for (const [label, input] of attempts) {
    try {
      expectError(await t.request(member.key, KtCreateKeyDocument, { input }), 'FORBIDDEN');
    } catch (error) {
      throw new Error(`${label}: ${(error as Error).message}`);
    }
  }
  assert.equal(await countRows(t, 'api_keys'), before, 'nothing written');

  // keys:write is not a blank cheque either: a key-manager grants only what it holds itself.
  const manager = await principalWithRoles(t, ['key-manager'], 'manager');
  const auditorRoleId = await roleIdByName(t, 'auditor');
  const targetId = await createHuman(t, [memberRoleId], 'managed');
  expectError(await t.request(manager.key, KtCreateKeyDocument, { input: { ownerId: targetId, name: 'esc', permissions: ['audit:read'] } }), 'FORBIDDEN');
  expectError(await t.request(manager.key, KtCreateKeyDocument, { input: { ownerId: targetId, name: 'esc', roleIds: [auditorRoleId] } }), 'FORBIDDEN');
  assert.equal(await countRows(t, 'api_keys'), before + 1, 'nothing but the key-manager principal key was added');
  const managed = (await t.ok(manager.key, KtCreateKeyDocument, { input: { ownerId: targetId, name: 'fine', permissions: ['keys:read'] } })).createApiKey;
  assert.equal(managed.apiKey.owner.id, targetId);

  // Within its own permissions it may grant; widening that key later is refused too.
  const own = (await t.ok(member.key, KtCreateKeyDocument, { input: { name: 'modest', permissions: ['keys:own'] } })).createApiKey;
  expectError(await t.request(member.key, KtUpdateKeyDocument, { id: own.apiKey.id, input: { permissions: ['users:read'] } }), 'FORBIDDEN');
  expectError(await t.request(member.key, KtUpdateKeyDocument, { id: own.apiKey.id, input: { roleIds: [adminRoleId] } }), 'FORBIDDEN');
  const after = await readKey(own.apiKey.id);
  assert.deepEqual(after.grantedPermissions, ['keys:own']);
  assert.deepEqual(after.roles, []);
});

test("a key's effective permissions shrink the moment its owner loses a role", async () => {
  const auditorRoleId = await roleIdByName(t, 'auditor');
  const verifierRoleId = await roleIdByName(t, 'verifier');
  const ownerId = await createHuman(t, [auditorRoleId, verifierRoleId], 'shrinking');
  const wide = await createKey(t, { ownerId, name: 'wide', permissions: ['*'] });
  const viaRole = await createKey(t, { ownerId, name: 'via-role', roleIds: [verifierRoleId] });

  assert.ok(wide.key.permissions.includes('keys:verify'));
  assert.ok(wide.key.permissions.includes('audit:read'));
  assert.deepEqual(viaRole.key.permissions, ['keys:verify']);
  const beforeResult = await verify(t, verifier.key, { key: wide.secret, permissions: ['keys:verify'] });
  assert.equal(beforeResult.code, 'VALID');
  assert.ok(beforeResult.permissions.includes('keys:verify'));
  // The key itself can verify keys while its owner holds keys:verify.
  assert.equal((await t.ok(wide.secret, KtVerifyDocument, { input: { key: viaRole.secret } })).verifyKey.code, 'VALID');

  await t.ok(t.adminKey, KtUnassignRoleDocument, { userId: ownerId, roleId: verifierRoleId });

  const wideNow = await readKey(wide.key.id);
  assert.ok(!wideNow.permissions.includes('keys:verify'), `ApiKey.permissions shrank: ${wideNow.permissions}`);
  assert.ok(wideNow.permissions.includes('audit:read'));
  assert.deepEqual(wideNow.grantedPermissions, ['*'], 'the grant itself is unchanged');
  assert.deepEqual((await readKey(viaRole.key.id)).permissions, []);

  const afterResult = await verify(t, verifier.key, { key: wide.secret });
  assert.equal(afterResult.code, 'VALID');
  assert.ok(!afterResult.permissions.includes('keys:verify'), `verifyKey permissions shrank: ${afterResult.permissions}`);
  assert.equal((await verify(t, verifier.key, { key: wide.secret, permissions: ['keys:verify'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.equal((await verify(t, verifier.key, { key: viaRole.secret, permissions: ['keys:verify'] })).code, 'INSUFFICIENT_PERMISSIONS');
  assert.ok(!(await t.ok(wide.secret, KtViewerDocument)).viewer.permissions.includes('keys:verify'));
  expectError(await t.request(wide.secret, KtVerifyDocument, { input: { key: viaRole.secret } }), 'FORBIDDEN');
});

test('apiKeys filters: ownerId, status, expiresBefore, createdById, search by name and by start; User.apiKeys(status)', async () => {
  const tag = unique('flt').replace('-', '');
  const ownerId = await createHuman(t, [memberRoleId], 'filter-owner');
  const ledger = await createKey(t, { ownerId, name: `${tag} Alpha Ledger`, expiresAt: inDays(1) });
  const backup = await createKey(t, { ownerId, name: `${tag} alpha-backup`, expiresAt: inDays(10) });
  const gamma = await createKey(t, { ownerId, name: `${tag} gamma` });
  const delta = await createKey(t, { ownerId, name: `${tag} delta` });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: gamma.key.id });
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: delta.key.id, reason: 'filter test' });
  const ids = (nodes: Array<{ id: string }>) => nodes.map((n) => n.id).sort();
  const sorted = (...keys: Array<{ key: KeyNode }>) => keys.map((k) => k.key.id).sort();

  const byOwner = await listKeys({ ownerId });
  assert.equal(byOwner.totalCount, 4);
  assert.deepEqual(ids(byOwner.nodes), sorted(ledger, backup, gamma, delta));
  assert.ok(byOwner.nodes.every((k) => k.owner.id === ownerId));

  assert.deepEqual(ids((await listKeys({ ownerId, status: 'ACTIVE' })).nodes), sorted(ledger, backup));
  assert.deepEqual(ids((await listKeys({ ownerId, status: 'DISABLED' })).nodes), sorted(gamma));
  const revoked = await listKeys({ ownerId, status: 'REVOKED' });
  assert.deepEqual(ids(revoked.nodes), sorted(delta));
  assert.equal(revoked.totalCount, 1);
  assert.equal((await listKeys({ ownerId, status: 'EXPIRED' })).totalCount, 0);

  assert.deepEqual(ids((await listKeys({ ownerId, expiresBefore: inDays(2) })).nodes), sorted(ledger), 'keys without expiry are not "before"');
  assert.deepEqual(ids((await listKeys({ ownerId, expiresBefore: inDays(30) })).nodes), sorted(ledger, backup));

  // Search: case-insensitive substring of the name, across owners.
  assert.deepEqual(ids((await listKeys({ search: `${tag} ALPHA`.toUpperCase() })).nodes), sorted(ledger, backup));
  assert.deepEqual(ids((await listKeys({ search: 'ledger', ownerId })).nodes), sorted(ledger));
  assert.deepEqual(ids((await listKeys({ search: tag })).nodes), sorted(ledger, backup, gamma, delta));
  // Search by a key's start.
  const byStart = await listKeys({ search: gamma.key.start });
  assert.ok(byStart.nodes.some((k) => k.id === gamma.key.id), `start ${gamma.key.start} finds the key`);
  assert.ok(byStart.nodes.every((k) => k.start === gamma.key.start));
  assert.equal((await listKeys({ search: 'no-such-key-name-anywhere' })).totalCount, 0);
  // A piece of a start is not a start: "kl" and "kl_" name no key (none of these keys' names holds them).
  const names = [`${tag} Alpha Ledger`, `${tag} alpha-backup`, `${tag} gamma`, `${tag} delta`];
  for (const piece of ['kl', 'kl_', gamma.key.start.slice(0, 5)]) {
    const byName = names.filter((name) => name.toLowerCase().includes(piece.toLowerCase())).length;
    assert.equal((await listKeys({ search: piece, ownerId })).totalCount, byName, piece);
  }
  // Search text is matched whole, not cut short: a 200-character name does not hold it.
  const longOwnerId = await createHuman(t, [memberRoleId], 'long-name-owner');
  const long = await createKey(t, { ownerId: longOwnerId, name: `${tag}${'x'.repeat(200 - tag.length)}` });
  assert.equal((await listKeys({ search: long.key.name, ownerId: longOwnerId })).totalCount, 1);
  assert.equal((await listKeys({ search: `${long.key.name}NOT-IN-NAME`, ownerId: longOwnerId })).totalCount, 0);
  const tooLong = await t.request(t.adminKey, KtKeysDocument, { filter: { search: 'x'.repeat(1001) }, first: 10 });
  assert.equal(tooLong.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');

  // createdById: keys a member issued for itself, listed by admin.
  const issuer = await principalWithRoles(t, ['member'], 'issuer');
  const issued = [
    (await t.ok(issuer.key, KtCreateKeyDocument, { input: { name: 'issued-1' } })).createApiKey.apiKey.id,
    (await t.ok(issuer.key, KtCreateKeyDocument, { input: { name: 'issued-2' } })).createApiKey.apiKey.id,
  ].sort();
  const createdBy = await listKeys({ createdById: issuer.userId });
  assert.deepEqual(ids(createdBy.nodes), issued, "the issuer's principal key was created by admin, so not listed");
  assert.ok(createdBy.nodes.every((k) => k.createdBy?.id === issuer.userId));
  assert.equal((await listKeys({ createdById: admin.userId, ownerId })).totalCount, 4);

  // User.apiKeys(status).
  const userKeys = async (status?: 'ACTIVE' | 'DISABLED' | 'REVOKED' | 'EXPIRED') =>
    (await t.ok(t.adminKey, KtUserKeysDocument, status ? { id: ownerId, status } : { id: ownerId })).user!.apiKeys;
  assert.equal((await userKeys()).totalCount, 4);
  assert.deepEqual(ids((await userKeys('REVOKED')).nodes), sorted(delta));
  assert.deepEqual(ids((await userKeys('DISABLED')).nodes), sorted(gamma));
  assert.deepEqual(ids((await userKeys('ACTIVE')).nodes), sorted(ledger, backup));
  assert.ok((await userKeys('REVOKED')).nodes.every((k) => k.status === 'REVOKED'));
});

test('apiKeys pages with cursors; first outside 0..500 is BAD_USER_INPUT', async () => {
  const ownerId = await createHuman(t, [memberRoleId], 'paged-owner');
  const created: string[] = [];
  for (let i = 0; i < 5; i++) created.push((await createKey(t, { ownerId, name: `page-${i}` })).key.id);

  const seen: string[] = [];
  let after: string | null = null;
  const pageSizes: number[] = [];
  for (let page = 0; page < 5; page++) {
    const data: Awaited<ReturnType<typeof listKeys>> = (await t.ok(t.adminKey, KtKeysDocument, { filter: { ownerId }, first: 2, after })).apiKeys;
    assert.equal(data.totalCount, 5, 'totalCount counts every match, not the page');
    pageSizes.push(data.nodes.length);
    seen.push(...data.nodes.map((n) => n.id));
    assert.deepEqual(data.edges.map((e) => e.node.id), data.nodes.map((n) => n.id));
    if (data.nodes.length > 0) assert.equal(data.pageInfo.endCursor, data.edges[data.edges.length - 1]!.cursor);
    if (!data.pageInfo.hasNextPage) break;
    after = data.pageInfo.endCursor;
  }
  assert.deepEqual(pageSizes, [2, 2, 1]);
  assert.equal(new Set(seen).size, 5, 'no key twice');
  assert.deepEqual([...seen].sort(), [...created].sort());

  // Keys created in the same millisecond still page without loss or repetition (ties broken by id).
  await t.db.query(`UPDATE api_keys SET created_at = '2030-01-01T00:00:00.000Z' WHERE owner_id = $1`, [ownerId]);
  const tied: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 5; page++) {
    const data: Awaited<ReturnType<typeof listKeys>> = (await t.ok(t.adminKey, KtKeysDocument, { filter: { ownerId }, first: 2, after: cursor })).apiKeys;
    tied.push(...data.nodes.map((n) => n.id));
    if (!data.pageInfo.hasNextPage) break;
    cursor = data.pageInfo.endCursor;
  }
  assert.deepEqual([...tied].sort(), [...created].sort(), 'same created_at: every key once');

  // User.apiKeys pages the same way.
  const firstPage = (await t.ok(t.adminKey, KtUserKeysDocument, { id: ownerId, first: 3 })).user!.apiKeys;
  assert.equal(firstPage.nodes.length, 3);
  assert.equal(firstPage.pageInfo.hasNextPage, true);
  const rest = (await t.ok(t.adminKey, KtUserKeysDocument, { id: ownerId, first: 3, after: firstPage.pageInfo.endCursor })).user!.apiKeys;
  assert.equal(rest.nodes.length, 2);
  assert.equal(rest.pageInfo.hasNextPage, false);

  expectBadInput(await t.request(t.adminKey, KtKeysDocument, { filter: { ownerId }, first: 501 }), /first/);
  expectBadInput(await t.request(t.adminKey, KtKeysDocument, { filter: { ownerId }, first: -1 }), /first/);
});

test('unknown ids given as arguments are NOT_FOUND; apiKey of an unknown id is null', async () => {
  const id = randomUUID();
  expectError(await t.request(t.adminKey, KtUpdateKeyDocument, { id, input: { name: 'ghost' } }), 'NOT_FOUND');
  expectError(await t.request(t.adminKey, KtDisableKeyDocument, { id }), 'NOT_FOUND');
  expectError(await t.request(t.adminKey, KtEnableKeyDocument, { id }), 'NOT_FOUND');
  expectError(await t.request(t.adminKey, KtRevokeKeyDocument, { id, reason: 'ghost' }), 'NOT_FOUND');
  expectError(await t.request(t.adminKey, KtRotateKeyDocument, { id, gracePeriodSeconds: 0 }), 'NOT_FOUND');
  expectError(await t.request(t.adminKey, KtRevokeAllKeysDocument, { userId: id, reason: 'ghost' }), 'NOT_FOUND');
  const read = await t.request(t.adminKey, KtKeyDocument, { id });
  assert.equal(read.errors, undefined);
  assert.equal(read.data?.apiKey, null);
});
