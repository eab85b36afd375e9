'use strict';
// spawnSidecar: start `sidecar serve`, read its one stdout line (ready or fatal), forward
// stderr, and turn every way it can end into a typed error.

const { spawn } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const { EventEmitter } = require('node:events');
const readline = require('node:readline');
const errors = require('./errors');

const STDERR_KEPT = 50;
const DEFAULT_READY_TIMEOUT_MS = 60_000;

/** A fresh per-launch token (43 URL-safe characters; the sidecar wants at least 16). */
function generateToken() {
  return randomBytes(32).toString('base64url');
}

/** The last `sidecar: …` line on stderr is the sidecar's one-sentence reason. */
function stderrReason(lines) {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^sidecar: (.*)$/.exec(lines[i]);
    if (m) return m[1];
  }
  return lines.length ? lines[lines.length - 1] : '';
}

/**
 * A running sidecar: its ready line's fields, the token, and its end.
 * Events: 'exit' (info: {exitCode, signal, error}) once; 'stderr' (line) per stderr line.
 */
class SidecarProcess extends EventEmitter {
  constructor(child, token, ready, state) {
    super();
    this.process = child;
    this.pid = ready.pid;
    this.port = ready.port;
    this.host = ready.host || '127.0.0.1';
    this.version = ready.version;
    this.protocol = ready.protocol;
    this.token = token;
    this.ready = ready;
    this.url = `ws://${this.host}:${this.port}/ws`;
    this._state = state;
    /** Resolves once the process ended: {exitCode, signal, error} (error null on exit 0). */
    this.exited = state.exited;
  }

  /** The endpoint a SidecarClient connects to. */
  get endpoint() {
    return { url: this.url, token: this.token };
  }

  /** The last stderr lines (at most 50). */
  get stderr() {
    return this._state.stderr.slice();
  }

  /** Whether the process is still running. */
  get running() {
    return this._state.exitInfo === null;
  }

  /**
   * A clean stop: close its stdin (with --watch-stdin it stops on EOF), SIGTERM if it is still
   * up after `timeoutMs`/2, SIGKILL after `timeoutMs`; resolves with the exit info.
   * (SIGTERM alone while its stdin-watch thread reads made Python abort at exit: SIGABRT.)
   */
  async stop({ timeoutMs = 10_000 } = {}) {
    if (!this.running) return this._state.exitInfo;
    const stdin = this.process.stdin;
    if (stdin && !stdin.destroyed) stdin.end();
    else this.process.kill('SIGTERM');
    const term = setTimeout(() => { if (this.running) this.process.kill('SIGTERM'); }, timeoutMs / 2);
    const kill = setTimeout(() => { if (this.running) this.process.kill('SIGKILL'); }, timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(term);
      clearTimeout(kill);
    }
  }
}

/**
 * Spawn `<executable> ...execArgs serve --port 0 --parent-pid <pid> --data-dir … ...args` with
 * SIDECAR_TOKEN in its environment; resolve with a SidecarProcess once the ready line came,
 * reject with a typed SidecarStartError (by exit code) for a fatal line or an early exit.
 */
function spawnSidecar(options = {}) {
  const {
    executable,
    execArgs = [],
    args = [],
    dataDir,
    logDir,
    modelDir,
    allowedRoots = [],
    env = {},
    port = 0,
    parentPid = process.pid,
    watchStdin = true,
    token = generateToken(),
    readyTimeoutMs = DEFAULT_READY_TIMEOUT_MS,
    onStderr,
    logger,
    cwd,
  } = options;
  if (!executable) return Promise.reject(new TypeError('spawnSidecar: `executable` is required'));
  if (typeof token !== 'string' || token.length < 16) {
    return Promise.reject(new TypeError('spawnSidecar: `token` must be a string of at least 16 characters'));
  }
  const argv = [...execArgs, 'serve', '--port', String(port)];
  if (parentPid != null) argv.push('--parent-pid', String(parentPid));
  if (watchStdin) argv.push('--watch-stdin');
  if (dataDir) argv.push('--data-dir', dataDir);
  if (logDir) argv.push('--log-dir', logDir);
  if (modelDir) argv.push('--model-dir', modelDir);
  for (const root of allowedRoots) argv.push('--allowed-root', root);
  argv.push(...args);

  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(executable, argv, {
        cwd,
        env: { ...process.env, ...env, SIDECAR_TOKEN: token },
        stdio: [watchStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch (err) {
      reject(errors.startError(`cannot start ${executable}: ${err.message}`, { code: 'spawn_failed', exitCode: null }));
      return;
    }
    let resolveExited;
    const state = {
      stderr: [],
      exitInfo: null,
      exited: new Promise((r) => { resolveExited = r; }),
    };
    let handle = null;
    let settled = false;
    let fatalLine = null;
    const settle = (fn, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn(value);
    };

    const timer = setTimeout(() => {
      const err = new errors.StartTimeoutError(
        `the sidecar printed no ready line within ${readyTimeoutMs} ms`, { code: 'ready_timeout', stderr: state.stderr.slice() });
      child.kill('SIGKILL');
      settle(reject, err);
    }, readyTimeoutMs);

    child.on('error', (err) => { // ENOENT, EACCES: no process at all
      const e = errors.startError(`cannot start ${executable}: ${err.message}`, { code: 'spawn_failed', exitCode: null });
      e.cause = err;
      settle(reject, e);
      if (state.exitInfo === null) {
        state.exitInfo = { exitCode: null, signal: null, error: e };
        resolveExited(state.exitInfo);
      }
    });
    if (child.stdin) child.stdin.on('error', () => {}); // EPIPE once it exits

    const err = readline.createInterface({ input: child.stderr, crlfDelay: Infinity });
    err.on('line', (line) => {
      state.stderr.push(line);
      if (state.stderr.length > STDERR_KEPT) state.stderr.shift();
      try {
        if (onStderr) onStderr(line);
        else if (logger) logger.info(`[sidecar] ${line}`);
      } catch { /* a logger that throws must not kill the reader */ }
      if (handle) handle.emit('stderr', line);
    });

    const out = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
    let first = true;
    out.on('line', (line) => {
      if (!first) { // the protocol says stdout carries one line; say so if more come
        if (logger) logger.warn(`[sidecar stdout] ${line}`);
        return;
      }
      first = false;
      let obj;
      try {
        obj = JSON.parse(line);
      } catch {
        obj = null;
      }
      if (obj && obj.event === 'ready' && Number.isInteger(obj.port)) {
        handle = new SidecarProcess(child, token, obj, state);
        settle(resolve, handle);
      } else if (obj && obj.event === 'fatal') {
        fatalLine = obj;
        const e = errors.startError(obj.message || obj.error || 'the sidecar could not start', {
          code: obj.error, exitCode: Number.isInteger(obj.code) ? obj.code : null,
          stderr: state.stderr.slice(), fatal: obj,
        });
        settle(reject, e);
        // the protocol says it exits within 2 s; make sure of it
        setTimeout(() => { if (state.exitInfo === null) child.kill('SIGKILL'); }, 3000).unref();
      } else {
        const e = new errors.SidecarStartError(`unexpected first line on the sidecar's stdout: ${line.slice(0, 200)}`,
          { code: 'bad_ready_line', stderr: state.stderr.slice() });
        child.kill('SIGKILL');
        settle(reject, e);
      }
    });

    child.on('close', (exitCode, signal) => {
      let error = null;
      if (!settled) { // ended before any line: the exit code and stderr say why
        const reason = stderrReason(state.stderr) || `exited with code ${exitCode}${signal ? ` (${signal})` : ''}`;
        error = errors.startError(reason, { code: exitCode === 2 ? 'usage' : 'exited_before_ready', exitCode, signal, stderr: state.stderr.slice() });
        settle(reject, error);
      } else if (handle && (exitCode !== 0 || signal)) {
        error = new errors.SidecarExitedError(
          `the sidecar ${signal ? `was killed by ${signal}` : `exited with code ${exitCode}`}` +
          (stderrReason(state.stderr) ? `: ${stderrReason(state.stderr)}` : ''),
          { exitCode, signal, stderr: state.stderr.slice() });
      } else if (fatalLine) {
        error = null;
      }
      state.exitInfo = { exitCode, signal, error };
      resolveExited(state.exitInfo);
      if (handle) handle.emit('exit', state.exitInfo);
    });
  });
}

module.exports = { spawnSidecar, generateToken, SidecarProcess };
