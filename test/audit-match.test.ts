import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { Client } from 'pg';
import { jsonContains } from '../src/services/audit-match';
import { adminUrl } from './helpers/database';

// A live tail filters events in process with jsonContains, the list with PostgreSQL's `@>`: they must agree.
let pg: Client;
before(async () => {
  pg = new Client({ connectionString: adminUrl() });
  await pg.connect();
});
after(() => pg.end());

// Few keys and values, so containment holds often; `__proto__` and `constructor` as keys, as a client may send them.
const { object } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constantFrom(null, true, false, 0, 1, 1.5, 'a', 'b', ''),
    tie('object'),
    fc.array(tie('value'), { maxLength: 3 }),
  ),
  object: fc.dictionary(fc.constantFrom('a', 'b', 'c', '__proto__', 'constructor', 'toString'), tie('value'), { maxKeys: 3 }),
}));

test("jsonContains answers as PostgreSQL's jsonb @> does, for details and filters alike", async () => {
  await fc.assert(
    fc.asyncProperty(object, object, async (details, wanted) => {
      // Through JSON, as both arrive: `__proto__` is then an own key, not the prototype.
      const [value, filter] = [JSON.parse(JSON.stringify(details)), JSON.parse(JSON.stringify(wanted))] as [unknown, unknown];
      const { rows } = await pg.query<{ contains: boolean }>('SELECT $1::jsonb @> $2::jsonb AS contains', [JSON.stringify(value), JSON.stringify(filter)]);
      assert.equal(jsonContains(value, filter), rows[0]!.contains, `${JSON.stringify(value)} @> ${JSON.stringify(filter)}`);
    }),
    { numRuns: 2000 },
  );
  // The case a review found: an inherited name is not a key the event has.
  assert.equal(jsonContains({ a: 1 }, JSON.parse('{"__proto__": {}}')), false);
  assert.equal(jsonContains({ a: 1 }, { toString: {} }), false);
});
