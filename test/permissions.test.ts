import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { covers, coversAll, intersect, normalize, notCoveredBy } from '../src/auth/permissions';

// The definitions, pairwise: what the indexed versions must agree with.
const referenceNormalize = (permissions: string[]) => {
  const unique = [...new Set(permissions)];
  return unique.filter((p) => !unique.some((other) => other !== p && covers(other, p))).sort();
};
const referenceIntersect = (a: string[], b: string[]) =>
  referenceNormalize(a.flatMap((x) => b.flatMap((y) => (covers(x, y) ? [y] : covers(y, x) ? [x] : []))));

// A small alphabet, so sets overlap, nest and repeat often: `*`, `a:*`, `a:b`, `a:b:*`, `b:a:c` …
const segment = fc.constantFrom('a', 'b', 'c');
const permission = fc.oneof(
  { weight: 1, arbitrary: fc.constant('*') },
  {
    weight: 12,
    arbitrary: fc
      .tuple(fc.array(segment, { minLength: 1, maxLength: 3 }), fc.oneof(segment, fc.constant('*')))
      .map(([stem, last]) => [...stem, last].join(':')),
  },
);
const permissions = fc.array(permission, { maxLength: 12 });

test('normalize keeps exactly the entries no other entry covers, sorted, as the pairwise definition does', () => {
  fc.assert(fc.property(permissions, (set) => assert.deepEqual(normalize(set), referenceNormalize(set))), { numRuns: 3000 });
  assert.deepEqual(normalize(['a:b', 'a:*', 'a:b:c', 'b:c', 'a:*']), ['a:*', 'b:c']);
  assert.deepEqual(normalize(['a:b:*', 'a:b:c', 'a:bc']), ['a:b:*', 'a:bc'], 'a stem covers by whole segments only');
  assert.deepEqual(normalize(['*', 'a:*', 'x:y']), ['*']);
});

test('intersect allows exactly what both sets allow, as the pairwise definition does', () => {
  fc.assert(fc.property(permissions, permissions, (a, b) => assert.deepEqual(intersect(a, b), referenceIntersect(a, b))), { numRuns: 3000 });
  assert.deepEqual(intersect(['*'], ['a:b', 'c:*']), ['a:b', 'c:*'], '`*` on a key means what the owner holds');
  assert.deepEqual(intersect(['a:*'], ['a:b:*', 'b:c']), ['a:b:*']);
  assert.deepEqual(intersect(['a:b'], ['a:c']), []);
});

test('notCoveredBy and coversAll agree with covers for small and large sets alike', () => {
  const large = fc.array(permission, { minLength: 20, maxLength: 40 });
  for (const held of [permissions, large]) {
    fc.assert(
      fc.property(held, large, (h, wanted) => {
        const expected = wanted.filter((w) => !h.some((x) => covers(x, w)));
        assert.deepEqual(notCoveredBy(h, wanted), expected);
        assert.equal(coversAll(h, wanted), expected.length === 0);
      }),
      { numRuns: 1000 },
    );
  }
});

test('sets of the largest size input allows (100 roles of 200) are met and normalised whole', () => {
  // 20,000 distinct permissions on each side, and wildcards that cover half of one of them.
  const owner = Array.from({ length: 20_000 }, (_, i) => `svc${i % 100}:act${i}`);
  const key = [...Array.from({ length: 50 }, (_, i) => `svc${i * 2}:*`), ...Array.from({ length: 20_000 }, (_, i) => `other${i}:read`)];
  const expected = owner.filter((p) => Number(/^svc(\d+):/.exec(p)![1]) % 2 === 0).sort();
  assert.deepEqual(intersect(key, owner), expected);
  assert.equal(normalize([...owner, 'svc7:*']).length, 20_000 - 200 + 1);
  assert.deepEqual(notCoveredBy(key, owner).length, 10_000);
});
