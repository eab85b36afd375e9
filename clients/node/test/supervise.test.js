'use strict';
// superviseSidecar against the real daemon: a kill -9 is followed by a new sidecar on the same
// data dir that the client finds by itself; an error that cannot heal ends supervision.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const sc = require('../src');
const { SIDECAR_BIN, tmpDir, client, nextEvent, makeAgent } = require('./helpers');

function options(root) {
  return {
    executable: SIDECAR_BIN, dataDir: path.join(root, 'data'), logDir: path.join(root, 'logs'),
    allowedRoots: [root], onStderr: () => {},
  };
}

test('kill -9: the supervisor respawns, the client reconnects on its own, state survives', async (t) => {
  const root = tmpDir(t);
  const sup = await sc.superviseSidecar(options(root), { backoff: { initialMs: 100, maxMs: 400 } });
  t.after(() => sup.stop());
  const c = client(t, { endpoint: sup });
  await c.connect();
  const agentId = await makeAgent(c, root);
  const first = sup.current;
  const restarted = nextEvent(sup, 'restart');
  const respawned = nextEvent(sup, 'spawn');
  const reconnected = nextEvent(c, 'connected');
  process.kill(first.pid, 'SIGKILL');
  const r = await restarted;
  assert.equal(r.error.signal, 'SIGKILL');
  const second = await respawned;
  assert.notEqual(second.pid, first.pid);
  assert.notEqual(second.token, first.token, 'a new launch gets a new token');
  await reconnected;
  assert.deepEqual((await c.agents.list()).map((a) => a.id), [agentId]);
  await sup.stop();
  assert.equal(sup.state, 'stopped');
  assert.equal(second.running, false);
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(sup.current, null, 'a stopped supervisor respawned');
});

test('a respawn that cannot heal (the database became a folder): give_up with the typed error', async (t) => {
  const root = tmpDir(t);
  const sup = await sc.superviseSidecar(options(root), { backoff: { initialMs: 300, maxMs: 300 } });
  t.after(() => sup.stop());
  const gaveUp = nextEvent(sup, 'give_up');
  const db = path.join(root, 'data', 'sidecar.sqlite3');
  process.kill(sup.current.pid, 'SIGKILL');
  await sup.current.exited.catch(() => {});
  fs.rmSync(db, { force: true });
  fs.rmSync(`${db}-wal`, { force: true });
  fs.rmSync(`${db}-shm`, { force: true });
  fs.mkdirSync(db);
  const err = await gaveUp;
  assert.ok(err instanceof sc.DatabaseUnusableError, `${err && err.name}: ${err && err.message}`);
  assert.equal(err.code, 'database_not_a_file');
  assert.equal(sup.state, 'failed');
  await assert.rejects(sup.endpoint(), sc.DatabaseUnusableError);
});

test('a crash loop ends supervision after maxRestarts', async (t) => {
  const root = tmpDir(t);
  const sup = await sc.superviseSidecar(options(root), { backoff: { initialMs: 50, maxMs: 50 }, maxRestarts: 2 });
  t.after(() => sup.stop());
  const gaveUp = nextEvent(sup, 'give_up');
  sup.on('spawn', (p) => process.kill(p.pid, 'SIGKILL'));
  process.kill(sup.current.pid, 'SIGKILL');
  const err = await gaveUp;
  assert.equal(err.code, 'crash_loop');
  assert.equal(sup.state, 'failed');
});
