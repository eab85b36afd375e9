'use strict';
// The IdempotencyStore contract (src/idempotency.js), run over every implementation the
// package ships and over a promise-returning one shaped like an app's database adapter.

const test = require('node:test');
const assert = require('node:assert/strict');
const sc = require('../src');

/** An app-database-like store: every call is async and results go through JSON. */
function asyncJsonStore() {
  const rows = new Map();
  return {
    get: async (k) => (rows.has(k) ? JSON.parse(rows.get(k)) : undefined),
    set: async (k, v) => { rows.set(k, JSON.stringify(v === undefined ? null : v)); },
  };
}

const IMPLEMENTATIONS = {
  MemoryIdempotencyStore: () => new sc.MemoryIdempotencyStore(),
  'an async JSON store': asyncJsonStore,
};

for (const [name, make] of Object.entries(IMPLEMENTATIONS)) {
  test(`contract: ${name}`, async () => {
    const s = make();
    assert.equal(await s.get('a_1:f:tasks:1'), undefined, 'an unknown key is undefined');
    await s.set('a_1:f:tasks:1', { id: 7 });
    assert.deepEqual(await s.get('a_1:f:tasks:1'), { id: 7 });
    await s.set('a_1:f:tasks:2', null);
    assert.equal(await s.get('a_1:f:tasks:2'), null, 'a null result is stored, not "unknown"');
    await s.set('a_1:f:tasks:3', undefined);
    assert.notEqual(await s.get('a_1:f:tasks:3'), undefined, 'a handler that returned nothing is remembered');
    assert.equal(await s.get('a_1:f:tasks:4'), undefined);
  });
}

test('MemoryIdempotencyStore keeps at most `max` keys, the oldest dropped first', () => {
  const s = new sc.MemoryIdempotencyStore({ max: 2 });
  s.set('a', { id: 1 });
  s.set('b', 2);
  s.set('c', 3);
  assert.equal(s.get('a'), undefined);
  assert.equal(s.get('b'), 2);
  assert.equal(s.size, 2);
});
