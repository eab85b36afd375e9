'use strict';
// kill -9 of the real daemon in the middle of a run, restart on the same data dir: the client
// reconnects to the new one, nothing is lost, and the idempotency store keeps every record
// that the sidecar sends again (its ack was lost) from being inserted twice.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const {
  tmpDir, startDaemon, client, writeTaskNotes, tagOf, makeAgent, nextEvent, sqlite, sleep,
} = require('./helpers');

/** The app's database: rows by tag, and the keys it has (the idempotency store's contract). */
function appDatabase() {
  const rows = new Map(); // tag → times inserted
  const keys = new Map();
  return {
    rows,
    keys,
    insert(tag) { rows.set(tag, (rows.get(tag) || 0) + 1); return { id: rows.size }; },
    store: { get: async (k) => keys.get(k), set: async (k, v) => { keys.set(k, v); } },
  };
}

async function settle(c, agentId) {
  // whatever the first run left: run again (new or unprocessed files only) and wait for it
  for (let i = 0; i < 100; i++) {
    const st = await c.status();
    if (st.outbox_pending === 0 && !st.agents.some((a) => a.running_run_id)) break;
    await sleep(100);
  }
  const { run_id: runId } = await c.runAgent(agentId);
  const fin = await nextEvent(c, 'run_finished', (f) => f.run.id === runId);
  assert.equal(fin.run.status, 'success', JSON.stringify(fin.run));
  assert.equal((await c.status()).outbox_pending, 0);
}

test('kill -9 while inserts are acked, restart: reconnect, nothing lost, duplicates suppressed', async (t) => {
  const root = tmpDir(t);
  const tags = writeTaskNotes(path.join(root, 'docs'), 4, 3);
  let d = await startDaemon(t, root);
  const app = appDatabase();
  const calls = new Map(); // idempotency key → handler calls
  let stored = 0;
  const store = {
    get: app.store.get,
    async set(key, value) { // the app commits the row and its key, then the sidecar dies
      await app.store.set(key, value);
      stored += 1;
      if (stored === 5) {
        process.kill(d.pid, 'SIGKILL');
        await d.exited;
      }
    },
  };
  const c = client(t, { endpoint: () => d, idempotencyStore: store });
  const duplicates = [];
  c.on('duplicate_insert', ({ key }) => duplicates.push(key));
  c.onInsert(async (table, data, meta) => {
    calls.set(meta.idempotencyKey, (calls.get(meta.idempotencyKey) || 0) + 1);
    return app.insert(tagOf(data.title));
  });
  const reconnecting = [];
  c.on('reconnecting', (info) => reconnecting.push(info));
  await c.connect();
  const agentId = await makeAgent(c, path.join(root, 'docs'));
  await c.runAgent(agentId);
  const info = await d.exited;
  assert.equal(info.signal, 'SIGKILL');
  await sleep(300); // the client retries the dead port meanwhile
  assert.ok(reconnecting.length >= 1 && !c.connected);

  d = await startDaemon(t, root); // same data dir, new port, new token
  const reconnected = nextEvent(c, 'connected');
  c.setEndpoint(() => d);
  await reconnected;
  await settle(c, agentId);

  assert.deepEqual(new Set(app.rows.keys()), tags, 'a task line was lost');
  assert.deepEqual([...app.rows.values()].filter((n) => n !== 1), [], 'a record was inserted twice');
  assert.deepEqual([...calls.values()].filter((n) => n !== 1), [], 'the handler ran twice for a key');
  assert.ok(duplicates.length >= 1, 'the record whose ack died with the daemon was not sent again');
  await c.close();
  await d.stop();
  const rows = sqlite(path.join(root, 'data', 'sidecar.sqlite3'), 'SELECT idempotency_key, state FROM outbox');
  assert.equal(rows.length, tags.size);
  assert.ok(rows.every((r) => r.state === 'acked'), JSON.stringify(rows));
  assert.deepEqual(new Set(rows.map((r) => r.idempotency_key)), new Set(app.keys.keys()));
});

test('acks lost to a crash (the daemon dies after taking an ack, before recording it): acked again from the store', async (t) => {
  const root = tmpDir(t);
  const tags = writeTaskNotes(path.join(root, 'docs'), 2, 3);
  // the daemon SIGKILLs itself on the 3rd tool_result it takes in, before committing it
  let d = await startDaemon(t, root, { env: { SIDECAR_FAILPOINT: 'delivery.ack_received:3' } });
  const app = appDatabase();
  const c = client(t, { endpoint: () => d, idempotencyStore: app.store });
  const duplicates = [];
  c.on('duplicate_insert', ({ key }) => duplicates.push(key));
  c.onInsert(async (table, data) => app.insert(tagOf(data.title)));
  await c.connect();
  const agentId = await makeAgent(c, path.join(root, 'docs'));
  await c.runAgent(agentId);
  assert.equal((await d.exited).signal, 'SIGKILL');
  d = await startDaemon(t, root);
  c.setEndpoint(() => d);
  await c.waitConnected({ timeoutMs: 20_000 });
  await settle(c, agentId);
  assert.deepEqual(new Set(app.rows.keys()), tags);
  assert.deepEqual([...app.rows.values()].filter((n) => n !== 1), [], 'a record was inserted twice');
  assert.ok(duplicates.length >= 1, 'no ack was lost: the failpoint did not bite');
});

test('a call sent again while its handler still runs (insert timeout): one insert, both acked', async (t) => {
  const root = tmpDir(t);
  const tags = writeTaskNotes(path.join(root, 'docs'), 1, 2);
  const d = await startDaemon(t, root, { args: ['--insert-timeout-seconds', '1'] });
  const app = appDatabase();
  const c = client(t, { endpoint: d, idempotencyStore: app.store });
  const seen = new Map(); // call id → tool_calls received
  c.on('frame', (f) => { if (f.type === 'tool_call') seen.set(f.id, (seen.get(f.id) || 0) + 1); });
  const entered = new Map(); // tag → handler calls (counted on entry: a second one overlaps)
  c.onInsert(async (table, data) => {
    const tag = tagOf(data.title);
    entered.set(tag, (entered.get(tag) || 0) + 1);
    await sleep(2600); // the app's database is slow: the sidecar re-sends after 1 s
    return app.insert(tag);
  });
  await c.connect();
  const agentId = await makeAgent(c, path.join(root, 'docs'));
  const { run_id: runId } = await c.runAgent(agentId);
  const fin = await nextEvent(c, 'run_finished', (f) => f.run.id === runId);
  assert.equal(fin.run.status, 'success');
  assert.ok([...seen.values()].some((n) => n > 1), 'the sidecar never re-sent a call: the test proves nothing');
  assert.deepEqual(new Set(app.rows.keys()), tags);
  assert.deepEqual([...app.rows.values()].filter((n) => n !== 1), [], 'a record was inserted twice');
  assert.deepEqual([...entered.values()], [1, 1], 'the handler ran again for a call it was still inserting');
  assert.equal((await c.status()).outbox_pending, 0);
});

test('the app goes away mid-run (its socket dies before an ack) and a new client takes over: nothing lost, nothing twice', async (t) => {
  const root = tmpDir(t);
  const tags = writeTaskNotes(path.join(root, 'docs'), 3, 3);
  const d = await startDaemon(t, root);
  const app = appDatabase(); // the app's database outlives its windows
  const first = client(t, { endpoint: d, idempotencyStore: app.store, insertConcurrency: 1 });
  let handled = 0;
  first.onInsert(async (table, data) => {
    const result = app.insert(tagOf(data.title));
    handled += 1;
    if (handled === 3) { await first.close(); } // the window reloads: this ack never goes out
    return result;
  });
  await first.connect();
  const agentId = await makeAgent(first, path.join(root, 'docs'));
  await first.runAgent(agentId);
  while (first.state !== 'closed') await sleep(20);

  const second = client(t, { endpoint: d, idempotencyStore: app.store });
  const duplicates = [];
  second.on('duplicate_insert', ({ key }) => duplicates.push(key));
  second.onInsert(async (table, data) => app.insert(tagOf(data.title)));
  await second.connect();
  for (let i = 0; i < 200; i++) {
    const st = await second.status();
    if (st.outbox_pending === 0 && !st.agents.some((a) => a.running_run_id)) break;
    await sleep(100);
  }
  assert.equal((await second.status()).outbox_pending, 0);
  assert.deepEqual(new Set(app.rows.keys()), tags, 'a task line was lost');
  assert.deepEqual([...app.rows.values()].filter((n) => n !== 1), [], 'a record was inserted twice');
  assert.ok(duplicates.length >= 1, 'the record whose ack was lost did not come again');
});
