'use strict';
// Where the client remembers which inserts the app already made, keyed by the tool_call's
// idempotency_key, so a call the sidecar sends again (its ack was lost to a crash or a
// disconnect) is acked with the first result instead of being inserted twice.
//
// The contract (test/idempotency.test.js runs it over each implementation):
//   get(key)          → the stored result (any JSON value, null included) or undefined if the
//                       key was never stored. May return a promise.
//   set(key, result)  → store it durably before resolving. May return a promise.
// The app's own store should write the key in the same transaction as the inserted row
// (a `sidecar_key` column with a unique index): then a crash between the two is impossible.

class MemoryIdempotencyStore {
  /** Keeps at most `max` keys (oldest dropped first): enough for any redelivery window. */
  constructor({ max = 100_000 } = {}) {
    this.max = max;
    this._map = new Map();
  }

  get(key) {
    return this._map.get(key);
  }

  set(key, result) {
    this._map.delete(key);
    this._map.set(key, result === undefined ? null : result);
    while (this._map.size > this.max) this._map.delete(this._map.keys().next().value);
  }

  get size() {
    return this._map.size;
  }
}

module.exports = { MemoryIdempotencyStore };
