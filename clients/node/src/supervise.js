'use strict';
// superviseSidecar: keep one sidecar running for the app's life. An unexpected exit (a crash,
// a kill) is followed by a respawn with backoff; start-up errors that cannot heal by waiting
// (a damaged database, a bad flag, an unwritable folder) end the supervision instead.

const { EventEmitter } = require('node:events');
const { spawnSidecar } = require('./spawn');
const errors = require('./errors');
const { backoffDelay } = require('./client');

/** Start-up errors worth another try after a pause: the lock of the dying one, a busy DB. */
function healsByWaiting(err) {
  return err instanceof errors.AlreadyRunningError || err instanceof errors.DatabaseLockedError ||
    err instanceof errors.StartTimeoutError ||
    (err instanceof errors.SidecarStartError && ['port_in_use', 'startup_failed', 'exited_before_ready'].includes(err.code));
}

class SidecarSupervisor extends EventEmitter {
  constructor(spawnOptions, { backoff = { initialMs: 500, maxMs: 30_000, factor: 2 }, maxRestarts = 10, windowMs = 60_000 } = {}) {
    super();
    this.spawnOptions = spawnOptions;
    this.backoff = { initialMs: 500, maxMs: 30_000, factor: 2, ...backoff };
    this.maxRestarts = maxRestarts;
    this.windowMs = windowMs;
    /** The running SidecarProcess, or null while (re)starting or stopped. */
    this.current = null;
    this.state = 'idle'; // idle | starting | running | restarting | stopped | failed
    this.error = null;
    this._restarts = []; // times of recent restarts (crash-loop guard)
    this._waiters = [];
    this._timer = null;
  }

  /** Spawn the first one; rejects with its SidecarStartError (nothing is retried then). */
  async start() {
    this.state = 'starting';
    const proc = await spawnSidecar(this.spawnOptions).catch((err) => {
      this.state = 'failed';
      this.error = err;
      throw err;
    });
    this._adopt(proc);
    return proc;
  }

  /** The running process's endpoint, waiting while it restarts; rejects once supervision failed. */
  endpoint() {
    if (this.current) return Promise.resolve(this.current.endpoint);
    if (this.state === 'failed' || this.state === 'stopped' || this.state === 'idle') {
      return Promise.reject(this.error || new errors.SidecarError(`the sidecar is ${this.state}`, { code: this.state }));
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  _adopt(proc) {
    this.current = proc;
    this.state = 'running';
    this.emit('spawn', proc);
    for (const w of this._waiters.splice(0)) w.resolve(proc.endpoint);
    proc.once('exit', (info) => {
      if (this.current === proc) this.current = null;
      this.emit('exit', info);
      if (this.state === 'running') this._restart(info.error || new errors.SidecarExitedError('the sidecar exited', info));
    });
  }

  _restart(cause) {
    const now = Date.now();
    this._restarts = this._restarts.filter((t) => now - t < this.windowMs);
    if (this._restarts.length >= this.maxRestarts) {
      this._fail(new errors.SidecarError(`the sidecar ended ${this._restarts.length} times within ${this.windowMs} ms; not restarting (last: ${cause.message})`, { code: 'crash_loop' }));
      return;
    }
    this._restarts.push(now);
    this.state = 'restarting';
    const attempt = this._restarts.length;
    const delayMs = backoffDelay(this.backoff, attempt);
    this.emit('restart', { attempt, delayMs, error: cause });
    this._timer = setTimeout(async () => {
      this._timer = null;
      if (this.state !== 'restarting') return;
      try {
        const proc = await spawnSidecar(this.spawnOptions);
        if (this.state !== 'restarting') { await proc.stop(); return; } // stopped meanwhile
        this._adopt(proc);
      } catch (err) {
        if (this.state !== 'restarting') return;
        if (healsByWaiting(err)) this._restart(err);
        else this._fail(err);
      }
    }, delayMs);
  }

  _fail(err) {
    this.state = 'failed';
    this.error = err;
    for (const w of this._waiters.splice(0)) w.reject(err);
    this.emit('give_up', err);
  }

  /** Stop supervising and stop the process (no restart follows). */
  async stop(options) {
    const was = this.state;
    this.state = 'stopped';
    clearTimeout(this._timer);
    const err = new errors.SidecarError('the sidecar was stopped', { code: 'stopped' });
    for (const w of this._waiters.splice(0)) w.reject(err);
    if (was === 'stopped' || !this.current) return null;
    return this.current.stop(options);
  }
}

/** Spawn a sidecar and keep it running; resolves with the supervisor once the first is ready. */
async function superviseSidecar(spawnOptions, options) {
  const s = new SidecarSupervisor(spawnOptions, options);
  await s.start();
  return s;
}

module.exports = { superviseSidecar, SidecarSupervisor };
