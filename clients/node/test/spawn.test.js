'use strict';
// spawnSidecar against the real daemon: the ready line, fatal lines as typed errors by
// exit code, early exits, crashes after ready, the parent pid, stderr forwarding.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const sc = require('../src');
const { SIDECAR_BIN, tmpDir, startDaemon, sleep } = require('./helpers');

test('ready line: port, pid, version and protocol; the token is in no output', async (t) => {
  const root = tmpDir(t);
  const lines = [];
  const d = await startDaemon(t, root, { onStderr: (l) => lines.push(l) });
  const version = execFileSync(SIDECAR_BIN, ['--version']).toString().trim().split(' ').pop();
  assert.ok(Number.isInteger(d.port) && d.port > 0 && d.port < 65536, `port ${d.port}`);
  assert.equal(d.pid, d.process.pid);
  assert.equal(d.version, version);
  assert.equal(d.protocol, 1);
  assert.equal(d.url, `ws://127.0.0.1:${d.port}/ws`);
  assert.ok(d.token.length >= 16);
  const health = await fetch(`http://127.0.0.1:${d.port}/health`);
  assert.equal(health.status, 200);
  const info = await d.stop();
  assert.deepEqual({ code: info.exitCode, signal: info.signal, error: info.error }, { code: 0, signal: null, error: null });
  assert.ok(lines.length > 0, 'stderr lines reach onStderr');
  assert.ok(lines.some((l) => l.includes(`listening on 127.0.0.1:${d.port}`)), lines.join('\n'));
  assert.ok(!lines.some((l) => l.includes(d.token)), 'the token leaked to stderr');
  const logs = fs.readdirSync(path.join(root, 'logs')).map((f) => fs.readFileSync(path.join(root, 'logs', f), 'utf8')).join('');
  assert.ok(!logs.includes(d.token), 'the token leaked to the log file');
});

test('a folder where the database should be: the fatal line becomes DatabaseUnusableError (exit 4)', async (t) => {
  const root = tmpDir(t);
  fs.mkdirSync(path.join(root, 'data', 'sidecar.sqlite3'), { recursive: true });
  const err = await startDaemon(t, root).then(() => null, (e) => e);
  assert.ok(err instanceof sc.DatabaseUnusableError, `${err && err.name}: ${err && err.message}`);
  assert.ok(err instanceof sc.SidecarStartError && err instanceof sc.SidecarError);
  assert.equal(err.code, 'database_not_a_file');
  assert.equal(err.exitCode, 4);
  assert.equal(err.fatal.event, 'fatal');
  assert.match(err.message, /sidecar\.sqlite3/);
});

test('an invalid --port: InvalidConfigError with exit code 5, message naming the flag', async (t) => {
  const root = tmpDir(t);
  const err = await startDaemon(t, root, { port: 70000 }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.InvalidConfigError, `${err && err.name}: ${err && err.message}`);
  assert.equal(err.code, 'invalid_config');
  assert.equal(err.exitCode, 5);
  assert.match(err.message, /--port/);
});

test('a second sidecar on the same data dir: AlreadyRunningError (exit 3) naming the pid', async (t) => {
  const root = tmpDir(t);
  const first = await startDaemon(t, root);
  const err = await startDaemon(t, root).then(() => null, (e) => e);
  assert.ok(err instanceof sc.AlreadyRunningError, `${err && err.name}: ${err && err.message}`);
  assert.equal(err.exitCode, 3);
  assert.equal(err.code, 'already_running');
  assert.match(err.message, new RegExp(`pid ${first.pid}`));
  assert.ok(first.running, 'the first one is untouched');
});

test('a flag the daemon does not know: UsageError (exit 2, no fatal line)', async (t) => {
  const root = tmpDir(t);
  const err = await startDaemon(t, root, { args: ['--no-such-flag'] }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.UsageError, `${err && err.name}: ${err && err.message}`);
  assert.equal(err.exitCode, 2);
  assert.equal(err.fatal, null);
  assert.match(err.message, /no-such-flag/);
});

test('an executable that does not exist: SidecarStartError spawn_failed', async (t) => {
  const root = tmpDir(t);
  const err = await sc.spawnSidecar({ executable: path.join(root, 'nope'), dataDir: root }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.SidecarStartError);
  assert.equal(err.code, 'spawn_failed');
  assert.match(err.message, /ENOENT/);
});

test('a weak token is refused before spawning; a custom one is used as given', async (t) => {
  await assert.rejects(sc.spawnSidecar({ executable: SIDECAR_BIN, token: 'short' }), TypeError);
  const root = tmpDir(t);
  const token = 'a-token-of-the-apps-own-choosing-123';
  const d = await startDaemon(t, root, { token });
  assert.equal(d.token, token);
});

test('kill -9 after ready: the exit event carries SidecarExitedError with the signal', async (t) => {
  const root = tmpDir(t);
  const d = await startDaemon(t, root);
  const exitEvent = new Promise((r) => d.once('exit', r));
  process.kill(d.pid, 'SIGKILL');
  const info = await exitEvent;
  assert.equal(info.signal, 'SIGKILL');
  assert.ok(info.error instanceof sc.SidecarExitedError);
  assert.equal(info.error.signal, 'SIGKILL');
  assert.equal(d.running, false);
  assert.equal((await d.exited).signal, 'SIGKILL');
});

test('--parent-pid is passed: the daemon stops when the process that spawned it dies', async (t) => {
  const root = tmpDir(t);
  // an intermediate Node process plays Electron; it prints the sidecar's pid and waits
  const script = `
    const { spawnSidecar } = require(${JSON.stringify(path.resolve(__dirname, '..', 'src'))});
    spawnSidecar({ executable: ${JSON.stringify(SIDECAR_BIN)}, dataDir: ${JSON.stringify(path.join(root, 'data'))},
      logDir: ${JSON.stringify(path.join(root, 'logs'))}, watchStdin: false, onStderr: () => {} })
      .then((d) => { console.log(d.pid); setInterval(() => {}, 1000); }, (e) => { console.error(e); process.exit(1); });`;
  const electron = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => electron.kill('SIGKILL'));
  const pid = await new Promise((resolve, reject) => {
    electron.stdout.once('data', (b) => resolve(Number(String(b).trim())));
    electron.once('exit', () => reject(new Error('the stand-in parent exited')));
  });
  const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  assert.equal(args[args.indexOf('--parent-pid') + 1], String(electron.pid));
  assert.ok(!args.includes('--watch-stdin'));
  electron.kill('SIGKILL');
  let alive = true;
  for (let i = 0; i < 100 && alive; i++) {
    await sleep(100);
    try { process.kill(pid, 0); } catch { alive = false; }
  }
  if (alive) process.kill(pid, 'SIGKILL');
  assert.equal(alive, false, 'the sidecar outlived its parent by 10 s');
});

test('the token goes in SIDECAR_TOKEN, never on the command line', async (t) => {
  const root = tmpDir(t);
  const d = await startDaemon(t, root, { env: { SIDECAR_TOKEN: 'must-be-overridden-by-the-launch-token' } });
  const cmdline = fs.readFileSync(`/proc/${d.pid}/cmdline`, 'utf8');
  const environ = fs.readFileSync(`/proc/${d.pid}/environ`, 'utf8').split('\0');
  assert.ok(!cmdline.includes(d.token));
  assert.ok(environ.includes(`SIDECAR_TOKEN=${d.token}`));
  assert.ok(cmdline.split('\0').includes('--parent-pid'));
  assert.equal(cmdline.split('\0')[cmdline.split('\0').indexOf('--parent-pid') + 1], String(process.pid));
});

/** A stand-in executable (a shell script) for the paths the real daemon never takes. */
function script(t, body) {
  const dir = tmpDir(t);
  const file = path.join(dir, 'fake-sidecar');
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

test('an exit before any line: typed by exit code, the message from its last `sidecar:` stderr line', async (t) => {
  const exe = script(t, 'echo "some warning" >&2; echo "sidecar: the database is locked by backup.exe" >&2; echo "trailing" >&2; exit 6');
  const err = await sc.spawnSidecar({ executable: exe, onStderr: () => {} }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.DatabaseLockedError, `${err && err.name}`);
  assert.equal(err.exitCode, 6);
  assert.equal(err.message, 'the database is locked by backup.exe');
  assert.equal(err.fatal, null);
  assert.deepEqual(err.stderr.slice(-1), ['trailing']);
});

test('a first line that is neither ready nor fatal: bad_ready_line, the process is killed', async (t) => {
  const exe = script(t, 'echo "Welcome to sidecar"; sleep 30');
  const err = await sc.spawnSidecar({ executable: exe, onStderr: () => {} }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.SidecarStartError);
  assert.equal(err.code, 'bad_ready_line');
  assert.match(err.message, /Welcome to sidecar/);
});

test('no line in time: StartTimeoutError and the process is killed', async (t) => {
  const pidFile = path.join(tmpDir(t), 'pid');
  const exe = script(t, `echo $$ > ${pidFile}; exec sleep 30`);
  const err = await sc.spawnSidecar({ executable: exe, readyTimeoutMs: 500, onStderr: () => {} }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.StartTimeoutError, `${err && err.name}`);
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  await sleep(200);
  assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the silent process was left running');
});

test('a fatal line from a process that then hangs: rejected at once, killed after 3 s', async (t) => {
  const pidFile = path.join(tmpDir(t), 'pid');
  const exe = script(t, `echo $$ > ${pidFile}; echo '{"event":"fatal","code":7,"error":"disk_full","message":"no space left"}'; exec sleep 30`);
  const t0 = Date.now();
  const err = await sc.spawnSidecar({ executable: exe, onStderr: () => {} }).then(() => null, (e) => e);
  assert.ok(err instanceof sc.CannotWriteError);
  assert.equal(err.code, 'disk_full');
  assert.ok(Date.now() - t0 < 2000, 'waited for the exit instead of the line');
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  let alive = true;
  for (let i = 0; i < 50 && alive; i++) {
    await sleep(100);
    try { process.kill(pid, 0); } catch { alive = false; }
  }
  assert.equal(alive, false);
});
