import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { generateKey } from '../src/auth/key-format';
import {
  KtCreateRoleDocument,
  KtDisableKeyDocument,
  KtDisableUserDocument,
  KtKeyDocument,
  KtKeyUsageDocument,
  KtRevokeKeyDocument,
  KtRotateKeyDocument,
  type CreateApiKeyInput,
  type VerifyKeyInput,
} from './generated/graphql';
import { roleIdByName, unique } from './helpers/fixtures';
import { auditEvents, createHuman, createKey, principalWithRoles, sleep, verify, type KeyPrincipal } from './helpers/key-principals';
import { startTestServer, type TestServer } from './helpers/server';

/**
 * The verification fast path (src/server/fast-verify.ts) must be indistinguishable from Apollo:
 * the same bytes, status and content type for every VerifyCode, for verifyKeys, for the
 * graphql-response+json media type, and every case it does not handle (no permission, bad input,
 * bad variables) must reach Apollo untouched, with no side effect from the attempt.
 */

let t: TestServer;
let verifier: KeyPrincipal;
let memberRoleId: string;
let billingRole: { id: string; name: string };
let reportsRole: { id: string; name: string };
let ownerId: string;

before(async () => {
  t = await startTestServer();
  verifier = await principalWithRoles(t, ['verifier'], 'fast-verifier');
  memberRoleId = await roleIdByName(t, 'member');
  billingRole = (
    await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('billing'), permissions: ['invoices:*', 'reports:read'] } })
  ).createRole;
  reportsRole = (
    await t.ok(t.adminKey, KtCreateRoleDocument, { input: { name: unique('reports'), permissions: ['reports:read'] } })
  ).createRole;
  ownerId = await createHuman(t, [memberRoleId, billingRole.id], 'fast-owner');
});
after(() => t.close());

/** An Accept header the fast path does not know: the request goes through Apollo, which answers application/json. */
const APOLLO_ACCEPT = 'application/json, */*;q=0.1';

const VERIFY_DOCUMENT = `query FastProbe($input: VerifyKeyInput!) {
  __typename
  verifyKey(input: $input) {
    __typename valid code keyId name ownerId permissions roles expiresAt remaining
    rateLimit { limit remaining resetAt }
    metadata
  }
}`;

const VERIFY_MANY_DOCUMENT = `query FastProbeMany($inputs: [VerifyKeyInput!]!) {
  verifyKeys(inputs: $inputs) {
    valid code keyId name ownerId permissions roles expiresAt remaining
    rateLimit { limit remaining resetAt }
    metadata
  }
}`;

interface RawResponse {
  status: number;
  contentType: string | undefined;
  cacheControl: string | undefined;
  text: string;
}

/**
 * A POST with exactly these headers (node:http, because fetch always adds `accept: *\/*`).
 * `accept: undefined` sends no Accept header at all.
 */
function rawPost(body: unknown, accept: string | undefined, key: string = verifier.key): Promise<RawResponse> {
  const payload = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    authorization: `Bearer ${key}`,
  };
  if (accept !== undefined) headers.accept = accept;
  return new Promise((resolve, reject) => {
    const req = request(t.url, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers['content-type'],
          cacheControl: res.headers['cache-control'],
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function fastPathCount(): Promise<number> {
  const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('keyledger_verify_fast_path_total '));
  assert.ok(line, '/metrics has keyledger_verify_fast_path_total');
  return Number(line.split(' ')[1]);
}

/** POST once as the fast path would take it, once through Apollo; asserts which path answered each. */
async function bothWays(
  body: unknown,
  options: { fastAccept?: string; apolloAccept?: string; key?: string; expectFast?: boolean } = {},
): Promise<{ fast: RawResponse; apollo: RawResponse }> {
  const expectFast = options.expectFast ?? true;
  const c0 = await fastPathCount();
  const fast = await rawPost(body, options.fastAccept, options.key);
  const c1 = await fastPathCount();
  const apollo = await rawPost(body, options.apolloAccept ?? APOLLO_ACCEPT, options.key);
  const c2 = await fastPathCount();
  assert.equal(c1 - c0, expectFast ? 1 : 0, expectFast ? `answered by the fast path: ${fast.text}` : `not answered by the fast path: ${fast.text}`);
  assert.equal(c2 - c1, 0, 'the Apollo request is not counted as fast');
  return { fast, apollo };
}

/**
 * A RATE_LIMITED answer's resetAt is computed as now + the limiter's "ms before the window ends",
 * each read from the clock separately, so two calls in the same window may differ by a millisecond
 * or two. Only that field is blanked, after checking the two values are within 50 ms.
 */
function blankResetAt(a: string, b: string): [string, string] {
  const pattern = /"resetAt":"([^"]+)"/g;
  const ra = [...a.matchAll(pattern)].map((m) => new Date(m[1]!).getTime());
  const rb = [...b.matchAll(pattern)].map((m) => new Date(m[1]!).getTime());
  assert.equal(ra.length, rb.length, 'the same number of resetAt fields');
  ra.forEach((v, i) => assert.ok(Math.abs(v - rb[i]!) <= 50, `resetAt values within 50 ms: ${v} vs ${rb[i]}`));
  return [a.replace(pattern, '"resetAt":"-"'), b.replace(pattern, '"resetAt":"-"')];
}

function assertSameResponse(fast: RawResponse, apollo: RawResponse, what: string): void {
  assert.equal(fast.status, apollo.status, `${what}: same status`);
  assert.equal(fast.contentType, apollo.contentType, `${what}: same content type`);
  assert.equal(fast.cacheControl, apollo.cacheControl, `${what}: same cache-control`);
  const [f, a] = blankResetAt(fast.text, apollo.text);
  assert.equal(f, a, `${what}: byte-for-byte the same body`);
}

const keyFor = (input: Partial<CreateApiKeyInput>) => createKey(t, { ownerId, name: unique('fast'), ...input });

/** One input per VerifyCode reachable; none of them changes state when verified again. */
async function inputsForEveryCode(): Promise<Array<{ code: string; input: VerifyKeyInput }>> {
  const metadata = { plan: 'pro', seats: 3, nested: { trial: false, tags: ['a', 'b\n"c"'] } };
  const valid = await keyFor({
    // Text JSON must escape, or must not: quotes, a backslash, a control character, U+2028, astral.
    name: 'valid "quoted" \\ tab\t snow \u2603 \u{1F600} \u2028',
    roleIds: [billingRole.id],
    permissions: ['reports:read'],
    expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
    metadata,
  });
  const revoked = await keyFor({ name: 'revoked', metadata });
  await t.ok(t.adminKey, KtRevokeKeyDocument, { id: revoked.key.id, reason: 'fast path test' });
  const expired = await keyFor({ name: 'expired' });
  await t.ok(t.adminKey, KtRotateKeyDocument, { id: expired.key.id, gracePeriodSeconds: 0 });
  const disabled = await keyFor({ name: 'disabled' });
  await t.ok(t.adminKey, KtDisableKeyDocument, { id: disabled.key.id });
  const leaverId = await createHuman(t, [memberRoleId], 'fast-leaver');
  const ownerDisabled = await createKey(t, { ownerId: leaverId, name: 'owner-disabled', permissions: ['*'] });
  await t.ok(t.adminKey, KtDisableUserDocument, { id: leaverId, reason: 'fast path test' });
  const fenced = await keyFor({ name: 'fenced', allowedCidrs: ['10.0.0.0/8'], metadata });
  const reader = await keyFor({ name: 'reader', permissions: ['invoices:read'], roleIds: [reportsRole.id], metadata });
  const spent = await keyFor({ name: 'spent', remaining: 0, metadata });
  const limited = await keyFor({ name: 'limited', rateLimit: { limit: 1, windowSeconds: 3600 }, metadata });
  assert.equal((await verify(t, verifier.key, { key: limited.secret })).code, 'VALID', 'the one verification of the window');

  return [
    { code: 'VALID', input: { key: valid.secret, ip: '203.0.113.7', resource: 'invoices/1', permissions: ['reports:read'] } },
    { code: 'MALFORMED', input: { key: 'kl_not-a-key' } },
    { code: 'NOT_FOUND', input: { key: generateKey('kl') } },
    { code: 'REVOKED', input: { key: revoked.secret } },
    { code: 'EXPIRED', input: { key: expired.secret } },
    { code: 'DISABLED', input: { key: disabled.secret } },
    { code: 'OWNER_DISABLED', input: { key: ownerDisabled.secret } },
    { code: 'IP_NOT_ALLOWED', input: { key: fenced.secret, ip: '192.168.0.1' } },
    { code: 'INSUFFICIENT_PERMISSIONS', input: { key: reader.secret, permissions: ['invoices:write'] } },
    { code: 'USAGE_EXCEEDED', input: { key: spent.secret } },
    { code: 'RATE_LIMITED', input: { key: limited.secret } },
  ];
}

let cases: Array<{ code: string; input: VerifyKeyInput }>;

test('verifyKey: the fast path answers every VerifyCode byte-for-byte as Apollo does', async () => {
  cases = await inputsForEveryCode();
  const start = await fastPathCount();
  let fastRequests = 0;
  for (const { code, input } of cases) {
    const body = { query: VERIFY_DOCUMENT, variables: { input }, operationName: 'FastProbe' };
    // The first (fast) request may be a cache miss, the second (Apollo) a hit: both must agree.
    const { fast, apollo } = await bothWays(body);
    fastRequests++;
    assert.equal(fast.status, 200, `${code}: ${fast.text}`);
    assert.equal(fast.contentType, 'application/json; charset=utf-8');
    const parsed = JSON.parse(fast.text) as { data: { __typename: string; verifyKey: { code: string } } };
    assert.equal(parsed.data.verifyKey.code, code, `the ${code} case answers ${code}`);
    assert.equal(parsed.data.__typename, 'Query');
    assert.ok(fast.text.endsWith('}\n'), 'one trailing newline, as Apollo writes it');
    assertSameResponse(fast, apollo, code);

    // Warm now: the fast path again, and the same bytes.
    const c = await fastPathCount();
    const again = await rawPost(body, undefined);
    fastRequests++;
    assert.equal(await fastPathCount(), c + 1);
    assertSameResponse(again, apollo, `${code} (warm)`);
  }
  assert.equal((await fastPathCount()) - start, fastRequests, 'the counter grew by exactly the number of fast requests');
});

test('verifyKeys with 20 inputs of mixed codes: identical both ways', async () => {
  assert.ok(cases, 'the previous test built the cases');
  const mixed = Array.from({ length: 20 }, (_, i) => cases[(i * 7) % cases.length]!);
  const body = { query: VERIFY_MANY_DOCUMENT, variables: { inputs: mixed.map((c) => c.input) } };
  const { fast, apollo } = await bothWays(body);
  assert.equal(fast.status, 200);
  const codes = (JSON.parse(fast.text) as { data: { verifyKeys: Array<{ code: string }> } }).data.verifyKeys.map((r) => r.code);
  assert.deepEqual(codes, mixed.map((c) => c.code), 'results in input order');
  assert.equal(new Set(codes).size, cases.length, 'every code is in the batch');
  assertSameResponse(fast, apollo, 'verifyKeys');
});

test('the known Accept headers take the fast path with the media type Apollo would choose', async () => {
  const { input } = cases.find((c) => c.code === 'INSUFFICIENT_PERMISSIONS')!;
  const body = { query: VERIFY_DOCUMENT, variables: { input } };

  // graphql-response+json: compared with Apollo answering the same media type for an Accept it negotiates itself.
  const gr = await bothWays(body, {
    fastAccept: 'application/graphql-response+json',
    apolloAccept: 'application/graphql-response+json, */*;q=0.1',
  });
  assert.equal(gr.fast.contentType, 'application/graphql-response+json; charset=utf-8');
  assertSameResponse(gr.fast, gr.apollo, 'application/graphql-response+json');

  for (const accept of ['*/*', 'application/json', 'application/graphql-response+json, application/json;q=0.9']) {
    const { fast, apollo } = await bothWays(body, { fastAccept: accept, apolloAccept: `${accept}, text/plain;q=0.01` });
    assertSameResponse(fast, apollo, `Accept: ${accept}`);
  }
});

test('a document selecting anything besides verifyKey/verifyKeys goes through Apollo, with the same answer', async () => {
  const { input } = cases.find((c) => c.code === 'NOT_FOUND')!;
  const body = {
    query: 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { code } viewer { user { id } } }',
    variables: { input },
  };
  const { fast, apollo } = await bothWays(body, { expectFast: false });
  const parsed = JSON.parse(fast.text) as { data: { verifyKey: { code: string }; viewer: { user: { id: string } } } };
  assert.equal(parsed.data.verifyKey.code, 'NOT_FOUND');
  assert.equal(parsed.data.viewer.user.id, verifier.userId);
  assertSameResponse(fast, apollo, 'verifyKey + viewer');
});

test('a caller without keys:verify gets FORBIDDEN from Apollo, and an authz.denied event, whatever the Accept header', async () => {
  const member = await principalWithRoles(t, ['member'], 'not-a-verifier');
  const body = { query: VERIFY_DOCUMENT, variables: { input: { key: generateKey('kl') } } };
  const { fast, apollo } = await bothWays(body, { key: member.key, expectFast: false });
  for (const response of [fast, apollo]) {
    const parsed = JSON.parse(response.text) as { data: unknown; errors?: Array<{ extensions?: { code?: string } }> };
    assert.equal(parsed.errors?.[0]?.extensions?.code, 'FORBIDDEN', response.text);
    assert.equal(parsed.data ?? null, null);
  }
  assertSameResponse(fast, apollo, 'FORBIDDEN');

  const denied = (await auditEvents(t, { actions: ['authz.denied'] })).filter((e) => e.actor?.id === member.userId);
  assert.equal(denied.length, 2, `one authz.denied event per request: ${JSON.stringify(denied)}`);
  for (const event of denied) {
    assert.equal(event.outcome, 'DENIED');
    assert.equal(event.actorKey?.id, member.keyId);
    assert.equal((event.details as { operation?: string } | null)?.operation, 'Query.verifyKey');
  }
});

test('bad input on a fast-path document falls back to Apollo: BAD_USER_INPUT, and no usage recorded for the key', async () => {
  const { secret, key } = await keyFor({ name: 'bad-input', remaining: 10 });
  const single = { query: `{ verifyKey(input: { key: "${secret}", ip: "not-an-ip" }) { valid code } }` };
  const { fast, apollo } = await bothWays(single, { expectFast: false });
  const parsed = JSON.parse(fast.text) as { errors?: Array<{ extensions?: { code?: string; field?: string } }> };
  assert.equal(parsed.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', fast.text);
  assert.equal(parsed.errors?.[0]?.extensions?.field, 'input.ip');
  assertSameResponse(fast, apollo, 'BAD_USER_INPUT');

  // verifyKeys checks every input before verifying any: the good first input is not verified either.
  const many = {
    query: `{ verifyKeys(inputs: [{ key: "${secret}" }, { key: "${secret}", ip: "999.1.1.1" }]) { valid code } }`,
  };
  const batch = await bothWays(many, { expectFast: false });
  assert.match(batch.fast.text, /BAD_USER_INPUT/);
  assertSameResponse(batch.fast, batch.apollo, 'verifyKeys BAD_USER_INPUT');

  await sleep(500);
  await t.server.services.usage.flush();
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  const usage = (await t.ok(t.adminKey, KtKeyUsageDocument, { id: key.id, from, to, bucket: 'MINUTE' })).apiKey!;
  assert.equal(usage.lastUsedAt, null, 'the key was never verified');
  const recorded = usage.usage.reduce((sum, p) => sum + p.valid + p.invalid, 0);
  assert.equal(recorded, 0, 'no usage recorded');
  assert.equal((await t.ok(t.adminKey, KtKeyDocument, { id: key.id })).apiKey!.remaining, 10, 'no quota taken');
});

test('variables of the wrong type: the same error answer as Apollo (the fast path steps aside)', async () => {
  const document = 'query($input: VerifyKeyInput!) { verifyKey(input: $input) { valid code } }';
  for (const variables of [{ input: { key: 42 } }, { input: 'kl_x' }, {}, { input: { key: 'x', ip: 5 } }]) {
    const { fast, apollo } = await bothWays({ query: document, variables }, { expectFast: false });
    assert.notEqual(fast.status, 500, fast.text);
    assert.match(fast.text, /"errors"/, `variables ${JSON.stringify(variables)} are refused`);
    assertSameResponse(fast, apollo, `variables ${JSON.stringify(variables)}`);
  }
  // A list variable given for a single input object is coerced, as graphql-js does on both paths.
  const coerced = await bothWays({ query: document, variables: { input: { key: 'x', permissions: 'a:b' } } });
  assertSameResponse(coerced.fast, coerced.apollo, 'coerced list variable');
});

// A fast-path execution that fails is answered by Apollo; with two verifying root fields the first
// would already have charged the key, so such documents never take the fast path.
test('a document with an error in one root field verifies the other field once, not twice', async () => {
  // Two aliased verifications, the second with a bad ip: the first runs before the second fails.
  // Whichever path answers, the key must be charged once, as Apollo alone charges it.
  const viaApollo = await keyFor({ name: 'aliased-apollo', remaining: 5 });
  const viaFast = await keyFor({ name: 'aliased-fast', remaining: 5 });
  const documentFor = (secret: string) => ({
    query: `{ a: verifyKey(input: { key: "${secret}" }) { code remaining } b: verifyKey(input: { key: "${secret}", ip: "nope" }) { code } }`,
  });
  const apollo = await rawPost(documentFor(viaApollo.secret), APOLLO_ACCEPT);
  const fast = await rawPost(documentFor(viaFast.secret), undefined);
  assert.match(apollo.text, /BAD_USER_INPUT/);
  assert.match(fast.text, /BAD_USER_INPUT/);
  // verifyKey is non-null, so the failed field nulls the whole answer while the other field's
  // verification is still running; it completes in the background shortly after.
  await sleep(500);
  const remaining = async (id: string) => (await t.ok(t.adminKey, KtKeyDocument, { id })).apiKey!.remaining;
  assert.equal(await remaining(viaApollo.key.id), 4, 'Apollo: the first field verified the key once');
  assert.equal(await remaining(viaFast.key.id), 4, 'no Accept header: the key must be charged once too');
  assert.equal(fast.text, apollo.text, 'and the answer is the same');
  await t.server.services.usage.flush();
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  for (const { key } of [viaApollo, viaFast]) {
    const points = (await t.ok(t.adminKey, KtKeyUsageDocument, { id: key.id, from, to, bucket: 'HOUR' })).apiKey!.usage;
    assert.equal(points.reduce((sum, p) => sum + p.valid, 0), 1, `one verification recorded for ${key.name}`);
  }
});

test('argument shapes the compiled coercion handles answer exactly as graphql-js coerces them', async () => {
  const { secret } = await keyFor({ name: 'shapes', permissions: ['invoices:read'] });
  const selection = '{ valid code keyId permissions }';
  const inline = `query($k: String!, $p: [String!]) { verifyKey(input: { key: $k, permissions: $p, resource: "r/1" }) ${selection} }`;
  const shapes: Array<{ what: string; body: unknown; fast: boolean; code?: string }> = [
    { what: 'object literal of variables', body: { query: inline, variables: { k: secret, p: ['invoices:read'] } }, fast: true, code: 'VALID' },
    { what: 'one string for a list variable', body: { query: inline, variables: { k: secret, p: 'invoices:write' } }, fast: true, code: 'INSUFFICIENT_PERMISSIONS' },
    { what: 'a nullable variable left out', body: { query: inline, variables: { k: secret } }, fast: false, code: 'VALID' },
    { what: 'a null list variable', body: { query: inline, variables: { k: secret, p: null } }, fast: true, code: 'VALID' },
    { what: 'literals only, one string for a list', body: { query: `{ verifyKey(input: { key: "${secret}", permissions: "invoices:read" }) ${selection} }` }, fast: true, code: 'VALID' },
    { what: 'a variable default', body: { query: `query($k: String! = "${secret}") { verifyKey(input: { key: $k }) ${selection} }` }, fast: true, code: 'VALID' },
    { what: 'one object for a list of inputs', body: { query: `query($i: [VerifyKeyInput!]!) { verifyKeys(inputs: $i) ${selection} }`, variables: { i: { key: secret } } }, fast: true },
    { what: 'an unknown input field', body: { query: 'query($i: VerifyKeyInput!) { verifyKey(input: $i) { code } }', variables: { i: { key: secret, bogus: 1 } } }, fast: false },
    { what: 'a number for a string inside an object literal', body: { query: inline, variables: { k: 7 } }, fast: false },
  ];
  for (const shape of shapes) {
    const { fast, apollo } = await bothWays(shape.body, { expectFast: shape.fast });
    assertSameResponse(fast, apollo, shape.what);
    if (shape.code) assert.equal((JSON.parse(fast.text) as { data: { verifyKey: { code: string } } }).data.verifyKey.code, shape.code, shape.what);
    if (!shape.fast && !shape.code) assert.match(fast.text, /"errors"/, `${shape.what} is refused`);
  }
});

test('an empty operationName names no operation: refused as Apollo refuses it, even once the same document has a fast plan', async () => {
  const document = `query { verifyKey(input: { key: ${JSON.stringify(generateKey('kl'))} }) { code } }`;
  // Warm the plan for the document without a name, then ask again with an empty one.
  await bothWays({ query: document });
  const { fast, apollo } = await bothWays({ query: document, operationName: '' }, { expectFast: false });
  assert.equal(fast.status, 400, fast.text);
  assert.match(fast.text, /OPERATION_RESOLUTION_FAILURE/);
  assertSameResponse(fast, apollo, 'empty operationName');
  // And the document keeps its fast plan for callers that name nothing.
  await bothWays({ query: document });
});
