import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyAuditFilter } from '../src/services/audit-query.service';
import { SqlConditions } from '../src/services/sql-conditions';

test('named parameters become $n in order; casts are left alone; every condition is bracketed', () => {
  const where = new SqlConditions();
  where.andWhere('e.ip::inet <<= :cidr::inet OR family(e.ip::inet) = 4', { cidr: '10.0.0.0/8' });
  where.andWhere('e.action = ANY(:exact) OR e.action LIKE :prefix0', { exact: ['key.create'], prefix0: 'user.%' });
  assert.equal(where.where, 'WHERE (e.ip::inet <<= $1::inet OR family(e.ip::inet) = 4) AND (e.action = ANY($2) OR e.action LIKE $3)');
  assert.deepEqual(where.params, ['10.0.0.0/8', ['key.create'], 'user.%']);
  assert.equal(new SqlConditions().where, '', 'no condition, no WHERE');
});

test('a parameter without a value is an error, not SQL with a hole (nor one found on the prototype)', () => {
  assert.throws(() => new SqlConditions().andWhere('e.id = :id', {}), /no value given for :id/);
  assert.throws(() => new SqlConditions().andWhere('e.x = :toString', {}), /no value given for :toString/);
});

test('filter values travel only as parameters, whatever they hold', () => {
  const where = new SqlConditions();
  const hostile = "x' OR 1=1 --";
  applyAuditFilter(where, { targetType: hostile, targetId: `${hostile}:id`, actions: ['key.*'], detailsContains: { reason: hostile } });
  assert.ok(!where.where.includes(hostile), where.where);
  assert.deepEqual(where.params.filter((p) => typeof p === 'string' && p.includes(hostile)).length, 3);
});
