'use strict';
// What the client writes on the wire, seen by a stand-in server (ws on 127.0.0.1): hello's
// role, tool_result shapes (success, error, retryable error), calls held until onInsert,
// a failing idempotency store, and the reconnect backoff schedule. The daemon-facing
// behaviour of the same code is proven against the real daemon in the other files.

const test = require('node:test');
const assert = require('node:assert/strict');
const { WebSocketServer } = require('ws');
const sc = require('../src');

/** A server that answers hello and records every frame the client sends. */
async function standIn(t, { token = 't'.repeat(20) } = {}) {
  const wss = new WebSocketServer({
    host: '127.0.0.1', port: 0,
    verifyClient: (info, cb) => cb(info.req.headers.authorization === `Bearer ${token}`, 401),
  });
  await new Promise((r) => wss.once('listening', r));
  const got = [];
  const waiters = [];
  let socket = null;
  wss.on('connection', (ws) => {
    socket = ws;
    ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      got.push(f);
      if (f.type === 'hello') ws.send(JSON.stringify({ type: 'hello_result', request_id: f.request_id, version: 'x', protocol: 1, capabilities: [], models: [] }));
      for (const w of waiters.splice(0)) w();
    });
  });
  t.after(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r); }));
  return {
    wss,
    endpoint: { port: wss.address().port, token },
    got,
    send: (f) => socket.send(JSON.stringify(f)),
    async until(pred, ms = 5000) {
      const t0 = Date.now();
      while (!pred(got)) {
        if (Date.now() - t0 > ms) throw new Error(`timed out; got ${JSON.stringify(got)}`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, 50); });
      }
      return got;
    },
  };
}

function call(id, key, title = 'Task') {
  return { type: 'tool_call', id, action: 'insert', table: 'tasks', data: { title, isAiSuggested: 1, isApproved: 0 }, idempotency_key: key, agent_id: 'a_1', run_id: 'r_1' };
}

const results = (got) => got.filter((f) => f.type === 'tool_result');

test('hello carries the role, the protocol and the client name', async (t) => {
  const s = await standIn(t);
  for (const role of ['writer', 'observer']) {
    const c = new sc.SidecarClient({ endpoint: s.endpoint, role, clientName: 'app/2.0' });
    await c.connect();
    await c.close();
  }
  const hellos = s.got.filter((f) => f.type === 'hello');
  assert.deepEqual(hellos.map((h) => [h.role, h.protocol, h.client]), [['writer', 1, 'app/2.0'], ['observer', 1, 'app/2.0']]);
  assert.throws(() => new sc.SidecarClient({ endpoint: s.endpoint, role: 'admin' }), TypeError);
});

test('tool_result: result on success, error on a throw, retryable only for a retryable error', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint });
  t.after(() => c.close());
  c.onInsert(async (table, data) => {
    if (data.title === 'plain') throw new Error('constraint failed');
    if (data.title === 'busy') throw new sc.RetryableInsertError('database is locked');
    if (data.title === 'flagged') throw Object.assign(new Error('disk busy'), { retryable: true });
    if (data.title === 'truthy') throw Object.assign(new Error('odd'), { retryable: 'yes' });
    if (data.title === 'nothing') return undefined;
    return { id: 42 };
  });
  await c.connect();
  for (const [i, title] of ['ok', 'plain', 'busy', 'flagged', 'truthy', 'nothing'].entries()) s.send(call(`c${i}`, `k${i}`, title));
  await s.until((g) => results(g).length === 6);
  const byId = Object.fromEntries(results(s.got).map((f) => [f.id, f]));
  assert.deepEqual(byId.c0, { type: 'tool_result', id: 'c0', result: { id: 42 } });
  assert.deepEqual(byId.c1, { type: 'tool_result', id: 'c1', error: 'constraint failed' });
  assert.deepEqual(byId.c2, { type: 'tool_result', id: 'c2', error: 'database is locked', retryable: true });
  assert.deepEqual(byId.c3, { type: 'tool_result', id: 'c3', error: 'disk busy', retryable: true });
  assert.deepEqual(byId.c4, { type: 'tool_result', id: 'c4', error: 'odd' });
  assert.deepEqual(byId.c5, { type: 'tool_result', id: 'c5', result: null });
});

test('a failed or retryable insert is not remembered: the call sent again runs the handler again', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint });
  t.after(() => c.close());
  let calls = 0;
  c.onInsert(async () => {
    calls += 1;
    if (calls === 1) throw new sc.RetryableInsertError('locked');
    return { id: 7 };
  });
  await c.connect();
  s.send(call('c1', 'k1'));
  await s.until((g) => results(g).length === 1);
  s.send(call('c1', 'k1'));
  await s.until((g) => results(g).length === 2);
  s.send(call('c1', 'k1')); // now it is stored: acked from the store
  await s.until((g) => results(g).length === 3);
  assert.equal(calls, 2);
  assert.deepEqual(results(s.got).map((f) => f.result ?? f.error), ['locked', { id: 7 }, { id: 7 }]);
});

test('calls that come before onInsert wait for it, then run in arrival order (insertConcurrency 1); a call without a key is answered', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint, insertConcurrency: 1 });
  t.after(() => c.close());
  await c.connect();
  s.send(call('c1', 'k1'));
  s.send({ ...call('c2', null), idempotency_key: undefined });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(results(s.got).length, 0);
  const seen = [];
  let running = 0;
  let most = 0;
  c.onInsert(async (table, data, meta) => {
    running += 1;
    most = Math.max(most, running);
    seen.push(meta.idempotencyKey);
    await new Promise((r) => setTimeout(r, 30));
    running -= 1;
    return { id: seen.length };
  });
  for (let i = 3; i <= 6; i++) s.send(call(`c${i}`, `k${i}`));
  await s.until((g) => results(g).length === 6);
  assert.deepEqual(seen, ['k1', null, 'k3', 'k4', 'k5', 'k6']);
  assert.equal(most, 1);
});

test('an idempotency store that fails: a retryable error, the handler is not called', async (t) => {
  const s = await standIn(t);
  const store = { get: async () => { throw new Error('SQLITE_BUSY'); }, set: async () => {} };
  const c = new sc.SidecarClient({ endpoint: s.endpoint, idempotencyStore: store });
  t.after(() => c.close());
  let calls = 0;
  c.onInsert(async () => { calls += 1; return {}; });
  await c.connect();
  s.send(call('c1', 'k1'));
  await s.until((g) => results(g).length === 1);
  assert.equal(calls, 0);
  const [r] = results(s.got);
  assert.equal(r.retryable, true);
  assert.match(r.error, /SQLITE_BUSY/);
});

test('an error frame for a request rejects it; one without a request_id is a protocol_error event', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint });
  t.after(() => c.close());
  await c.connect();
  const pending = c.status();
  const req = (await s.until((g) => g.some((f) => f.type === 'status'))).find((f) => f.type === 'status');
  s.send({ type: 'error', request_id: req.request_id, code: 'database_locked', message: 'held by backup.exe' });
  const err = await pending.then(() => null, (e) => e);
  assert.ok(err instanceof sc.BusyError);
  assert.equal(err.retryable, true);
  assert.equal(err.message, 'held by backup.exe');
  const pe = new Promise((r) => c.once('protocol_error', r));
  s.send({ type: 'error', code: 'unknown_tool_call', message: 'no tool_call with id', field: 'id' });
  assert.ok((await pe) instanceof sc.ProtocolError);
  const ev = new Promise((r) => c.once('run_delivered', r)); // a frame this client has no type for
  s.send({ type: 'run_delivered', run_id: 'r_1' });
  assert.equal((await ev).run_id, 'r_1');
});

test('backoff: exponential from initialMs, capped at maxMs, jittered within [half, full]', async () => {
  const b = { initialMs: 100, maxMs: 400, factor: 2 };
  const bases = [100, 200, 400, 400, 400];
  for (let i = 0; i < 200; i++) {
    bases.forEach((base, k) => {
      const d = sc.backoffDelay(b, k + 1);
      assert.ok(d >= base / 2 && d <= base, `attempt ${k + 1}: ${d} outside [${base / 2}, ${base}]`);
    });
  }
});

test('reconnecting to nothing: attempts back off, then connect once a server is there', async (t) => {
  const c = new sc.SidecarClient({ endpoint: { port: 9, token: 'x'.repeat(20) }, backoff: { initialMs: 40, maxMs: 160, factor: 2 } });
  t.after(() => c.close());
  const delays = [];
  c.on('reconnecting', ({ delayMs }) => delays.push(delayMs));
  c.connect().catch(() => {});
  while (delays.length < 6) await new Promise((r) => setTimeout(r, 20));
  assert.equal(delays[0], 0, 'the first retry is immediate');
  assert.ok(delays[1] >= 20 && delays[1] <= 40 && delays[5] >= 80 && delays[5] <= 160, delays.join(','));
  const s = await standIn(t);
  c.setEndpoint(s.endpoint);
  await c.waitConnected({ timeoutMs: 5000 });
  assert.ok(c.connected);
});

test('setEndpoint while the endpoint is still being looked up: one connection, not two', async (t) => {
  const s = await standIn(t);
  let connections = 0;
  s.wss.on('connection', () => { connections += 1; });
  const slow = () => new Promise((r) => setTimeout(() => r(s.endpoint), 150));
  const c = new sc.SidecarClient({ endpoint: slow });
  t.after(() => c.close());
  const connected = c.connect();
  c.setEndpoint(slow);
  c.setEndpoint(slow);
  await connected;
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(connections, 1);
  assert.equal(s.got.filter((f) => f.type === 'hello').length, 1);
});

test('close() twice, requests after close, close while connecting', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint });
  const waiting = c.connect();
  const pending = c.status();
  await Promise.all([c.close(), c.close()]);
  await assert.rejects(waiting, sc.ClientClosedError);
  await assert.rejects(pending, sc.ClientClosedError);
  await assert.rejects(c.status(), sc.ClientClosedError);
  await assert.rejects(c.connect(), sc.ClientClosedError);
  assert.equal(c.state, 'closed');
});

test('a sidecar that stops answering (half-open socket): dropped after a silent ping interval, reopened', { timeout: 10_000 }, async (t) => {
  const s = await standIn(t);
  const sockets = [];
  s.wss.on('connection', (ws) => sockets.push(ws));
  const c = new sc.SidecarClient({ endpoint: s.endpoint, pingIntervalMs: 100, backoff: { initialMs: 20, maxMs: 50 } });
  t.after(() => c.close());
  await c.connect();
  const dropped = new Promise((r) => c.once('disconnected', r));
  sockets[0]._socket.pause(); // reads nothing more: no pong, no frames, but the TCP link stays up
  await dropped;
  await new Promise((r) => c.once('connected', r));
  assert.equal(sockets.length, 2);
  assert.equal(s.got.filter((f) => f.type === 'hello').length, 2);
});

test('a listener that throws breaks nothing: replies still resolve, inserts are still acked', async (t) => {
  const s = await standIn(t);
  const c = new sc.SidecarClient({ endpoint: s.endpoint });
  t.after(() => c.close());
  const warnings = [];
  const onWarning = (w) => { if (w.name === 'SidecarListenerWarning') warnings.push(w.message); };
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  c.on('frame', () => { throw new Error('tray code bug'); });
  c.on('run_progress', () => { throw new Error('tooltip bug'); });
  c.onInsert(async () => ({ id: 1 }));
  await c.connect();
  const pending = c.status();
  const req = (await s.until((g) => g.some((f) => f.type === 'status'))).find((f) => f.type === 'status');
  s.send({ type: 'status_result', request_id: req.request_id, version: 'x', agents: [], outbox_pending: 0, clients: 1 });
  assert.equal((await pending).type, 'status_result');
  s.send({ type: 'run_progress', run_id: 'r', agent_id: 'a', files_done: 1, files_total: 2, items_found: 0 });
  s.send(call('c1', 'k1'));
  await s.until((g) => results(g).length === 1);
  await new Promise((r) => setImmediate(r));
  assert.ok(warnings.some((m) => m.includes('tooltip bug')) && warnings.some((m) => m.includes('tray code bug')), warnings.join('\n'));
  assert.ok(c.connected);
});
