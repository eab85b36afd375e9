'use strict';
// SidecarClient: one WebSocket to the sidecar that reconnects with backoff, says hello with a
// role on every connection, matches replies to requests by request_id, turns pushes into
// events, and answers insert tool_calls through one handler with idempotency-key dedup.

const { EventEmitter } = require('node:events');
const { randomBytes } = require('node:crypto');
const WebSocket = require('ws');
const errors = require('./errors');
const { MemoryIdempotencyStore } = require('./idempotency');
const generated = require('./protocol.generated');

/** Requests safe to repeat (reads, cancels): re-sent after a reconnect, not ConnectionLostError. */
const SAFE_TO_REPEAT = new Set(['status', 'agent_list', 'run_list', 'cancel_run', 'oauth_cancel']);
const DEFAULTS = {
  role: 'writer',
  clientName: 'sidecar-node-client',
  requestTimeoutMs: 30_000,
  pingIntervalMs: 15_000,
  handshakeTimeoutMs: 10_000,
  insertConcurrency: 4,
  backoff: { initialMs: 250, maxMs: 10_000, factor: 2 },
};

function backoffDelay({ initialMs, maxMs, factor }, attempt) {
  const base = Math.min(maxMs, initialMs * factor ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + Math.random() * base / 2); // equal jitter: never a herd
}

function errorMessage(err) {
  if (err instanceof Error) return err.message || err.name;
  if (typeof err === 'string') return err;
  try { return JSON.stringify(err); } catch { return String(err); }
}

class SidecarClient extends EventEmitter {
  /**
   * @param {object} options  endpoint ({url, token} | {port, token} | a function returning one,
   *   e.g. a SidecarProcess), role, clientName, deviceId, requestTimeoutMs, pingIntervalMs,
   *   backoff {initialMs, maxMs, factor}, idempotencyStore, logger, origin, insertConcurrency
   *   (handlers running at once; 1 = one at a time in arrival order).
   */
  constructor(options = {}) {
    super();
    const opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) } };
    if (opts.role !== 'writer' && opts.role !== 'observer') {
      throw new TypeError(`role must be "writer" or "observer", got ${JSON.stringify(opts.role)}`);
    }
    this.options = opts;
    this.role = opts.role;
    this._endpoint = opts.endpoint || (opts.url || opts.port ? { url: opts.url, port: opts.port, token: opts.token } : null);
    this.idempotencyStore = opts.idempotencyStore || new MemoryIdempotencyStore();
    this.logger = opts.logger || null;
    this.state = 'idle'; // idle | connecting | open | waiting | refused | closed
    this.helloResult = null;
    this._ws = null;
    this._ready = false;
    this._attempt = 0;
    this._retryTimer = null;
    this._gen = 0;
    this._pingTimer = null;
    this._alive = true;
    this._prefix = `n${randomBytes(3).toString('hex')}_`;
    this._seq = 0;
    this._pending = new Map(); // request_id → {type, frame, resolve, reject, timer, sent}
    this._waiters = []; // {resolve, reject} of connect()/waitConnected()
    this._insertHandler = null;
    this._heldCalls = []; // tool_calls that came before onInsert()
    this._inserting = new Map(); // idempotency_key → promise of the outcome
    this._slotsBusy = 0;
    this._slotQueue = [];
    this.agents = {
      upsert: (agent, o) => this.request('agent_upsert', { agent }, o),
      list: (kind, o) => this.request('agent_list', kind ? { kind } : {}, o).then((r) => r.agents),
      remove: (agentId, o) => this.request('agent_delete', { agent_id: agentId }, o),
    };
  }

  // ── connecting ─────────────────────────────────────────────────────────────────────────

  /** Start connecting (and reconnecting); resolves with the first hello_result. */
  connect() {
    if (this.state === 'closed') return Promise.reject(new errors.ClientClosedError());
    const p = this.waitConnected();
    if (this.state === 'idle' || this.state === 'refused') this._open();
    return p;
  }

  /** Resolves with the hello_result once connected (at once if already). */
  waitConnected({ timeoutMs } = {}) {
    if (this._ready) return Promise.resolve(this.helloResult);
    if (this.state === 'closed') return Promise.reject(new errors.ClientClosedError());
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      if (timeoutMs != null) {
        w.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((x) => x !== w);
          reject(new errors.RequestTimeoutError(`not connected within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._waiters.push(w);
    });
  }

  /** Whether a connection is open and hello was answered. */
  get connected() {
    return this._ready;
  }

  /** Point the client at another sidecar (a respawned one) and reconnect to it now. */
  setEndpoint(endpoint) {
    this._endpoint = endpoint;
    if (this.state === 'closed') return;
    this._attempt = 0;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._ws) this._ws.terminate(); // its close handler reconnects at once (attempt 0)
    else if (this.state !== 'idle') this._open();
  }

  async _resolveEndpoint() {
    let ep = this._endpoint;
    if (typeof ep === 'function') ep = await ep();
    else if (ep && typeof ep.endpoint === 'function') ep = await ep.endpoint(); // a SidecarSupervisor
    if (ep && typeof ep === 'object' && 'endpoint' in ep && !ep.url && !ep.port) ep = ep.endpoint;
    if (!ep || !ep.token) throw new TypeError('SidecarClient: no endpoint ({url|port, token}) to connect to');
    const url = ep.url || `ws://${ep.host || '127.0.0.1'}:${ep.port}/ws`;
    return { url, token: ep.token };
  }

  async _open() {
    if (this.state === 'closed') return;
    this.state = 'connecting';
    const gen = ++this._gen; // a newer _open (setEndpoint) supersedes this one
    let ep;
    try {
      ep = await this._resolveEndpoint();
    } catch (err) {
      if (gen === this._gen) this._scheduleRetry(err);
      return;
    }
    if (this.state !== 'connecting' || gen !== this._gen) return; // closed or superseded meanwhile
    const headers = { Authorization: `Bearer ${ep.token}` };
    if (this.options.origin) headers.Origin = this.options.origin;
    const ws = new WebSocket(ep.url, {
      headers,
      handshakeTimeout: this.options.handshakeTimeoutMs,
      perMessageDeflate: false,
      maxPayload: 16 * 1024 * 1024,
    });
    this._ws = ws;
    this._ready = false;
    let failure = null;
    ws.on('unexpected-response', (req, res) => {
      if (res.statusCode === 401) failure = new errors.TokenRefusedError(`the sidecar refused the token (HTTP 401) at ${ep.url}`);
      else if (res.statusCode === 403) failure = new errors.OriginRefusedError(`the sidecar refused the Origin ${this.options.origin || ''} (HTTP 403)`);
      else failure = new errors.SidecarError(`the sidecar answered HTTP ${res.statusCode} instead of upgrading`, { code: 'bad_handshake' });
      res.resume();
      req.destroy();
      ws.terminate();
    });
    ws.on('error', (err) => { failure = failure || err; });
    ws.on('open', () => {
      this._alive = true;
      this._startPing(ws);
      this._sayHello(ws);
    });
    ws.on('message', (data, isBinary) => {
      this._alive = true;
      if (ws !== this._ws) return;
      if (isBinary) return;
      let frame;
      try {
        frame = JSON.parse(data.toString('utf8'));
      } catch {
        this._log('warn', 'the sidecar sent a frame that is not JSON; ignored');
        return;
      }
      if (frame && typeof frame === 'object') this._dispatch(frame);
    });
    ws.on('ping', () => { this._alive = true; });
    ws.on('pong', () => { this._alive = true; });
    ws.on('close', (code, reason) => this._onClose(ws, code, reason.toString(), failure));
  }

  _sayHello(ws) {
    const id = `${this._prefix}hello${++this._seq}`;
    const frame = { type: 'hello', request_id: id, protocol: generated.PROTOCOL_VERSION, client: this.options.clientName, role: this.role };
    if (this.options.deviceId) frame.device_id = this.options.deviceId;
    this._helloId = id;
    ws.send(JSON.stringify(frame));
  }

  _onHello(frame) {
    if (frame.type === 'error') {
      const err = errors.requestError(frame, 'hello');
      this._log('error', `hello refused: ${err.message}`);
      if (frame.code === 'unsupported_protocol') this._refuse(err);
      else this._ws.terminate(); // reconnect with backoff
      return;
    }
    this._ready = true;
    this.state = 'open';
    this._attempt = 0;
    this.helloResult = frame;
    for (const w of this._waiters.splice(0)) { clearTimeout(w.timer); w.resolve(frame); }
    this._emit('connected', frame);
    for (const p of this._pending.values()) if (!p.sent) this._sendRequest(p);
  }

  _onClose(ws, code, reason, failure) {
    if (ws !== this._ws) return;
    clearInterval(this._pingTimer);
    this._ws = null;
    const wasReady = this._ready;
    this._ready = false;
    this._heldCalls = []; // the sidecar sends them again to whoever takes inserts next
    for (const [id, p] of this._pending) {
      if (!p.sent) continue;
      if (SAFE_TO_REPEAT.has(p.type)) { p.sent = false; continue; }
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new errors.ConnectionLostError(
        `the connection dropped before the reply to ${p.type}; it may or may not have taken effect`,
        { requestId: id, requestType: p.type }));
    }
    if (wasReady) this._emit('disconnected', { code, reason });
    if (this.state === 'closed') return;
    if (failure instanceof errors.TokenRefusedError || failure instanceof errors.OriginRefusedError) {
      this._refuse(failure);
      return;
    }
    this._scheduleRetry(failure || new errors.SidecarError(`connection closed (${code}${reason ? ` ${reason}` : ''})`, { code: 'closed' }));
  }

  /** The sidecar will not take us as we are: stop retrying until setEndpoint() or connect(). */
  _refuse(err) {
    this.state = 'refused';
    for (const w of this._waiters.splice(0)) { clearTimeout(w.timer); w.reject(err); }
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err);
    }
    if (this._ws) this._ws.terminate();
    this._emit('refused', err);
  }

  _scheduleRetry(err) {
    if (this.state === 'closed' || this.state === 'refused') return;
    this.state = 'waiting';
    this._attempt += 1;
    const delayMs = this._attempt === 1 ? 0 : backoffDelay(this.options.backoff, this._attempt - 1);
    this._emit('reconnecting', { attempt: this._attempt, delayMs, error: err });
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delayMs);
  }

  _startPing(ws) {
    clearInterval(this._pingTimer);
    if (!this.options.pingIntervalMs) return;
    this._pingTimer = setInterval(() => {
      if (!this._alive) { // nothing heard for a whole interval: a half-open socket
        this._log('warn', 'the sidecar did not answer a ping; reconnecting');
        ws.terminate();
        return;
      }
      this._alive = false;
      try { ws.ping(); } catch { /* closing */ }
    }, this.options.pingIntervalMs);
    this._pingTimer.unref?.();
  }

  /** Stop for good: pending requests reject with ClientClosedError. */
  close() {
    if (this.state === 'closed') return Promise.resolve();
    this.state = 'closed';
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    const err = new errors.ClientClosedError();
    for (const w of this._waiters.splice(0)) { clearTimeout(w.timer); w.reject(err); }
    for (const [id, p] of this._pending) { this._pending.delete(id); clearTimeout(p.timer); p.reject(err); }
    const ws = this._ws;
    this._ready = false;
    if (!ws || ws.readyState === WebSocket.CLOSED) { this._ws = null; return Promise.resolve(); }
    return new Promise((resolve) => {
      const t = setTimeout(() => { ws.terminate(); }, 2000);
      ws.once('close', () => { clearTimeout(t); this._ws = null; resolve(); });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000, 'client closing');
    });
  }

  // ── frames in ──────────────────────────────────────────────────────────────────────────

  _dispatch(frame) {
    this._emit('frame', frame);
    const rid = frame.request_id;
    if (rid && rid === this._helloId) { this._helloId = null; this._onHello(frame); return; }
    if (rid && this._pending.has(rid)) {
      const p = this._pending.get(rid);
      this._pending.delete(rid);
      clearTimeout(p.timer);
      if (frame.type === 'error') p.reject(errors.requestError(frame, p.type));
      else p.resolve(frame);
      return;
    }
    if (frame.type === 'tool_call') { this._onToolCall(frame); return; }
    if (frame.type === 'error') { this._emit('protocol_error', errors.requestError(frame)); return; }
    if (typeof frame.type === 'string' && frame.type !== 'frame') this._emit(frame.type, frame);
  }

  // ── requests ───────────────────────────────────────────────────────────────────────────

  /** Send any request frame; resolves with its reply, rejects with a typed error. */
  request(type, fields = {}, { timeoutMs = this.options.requestTimeoutMs } = {}) {
    if (this.state === 'closed') return Promise.reject(new errors.ClientClosedError());
    if (this.state === 'refused') return Promise.reject(new errors.ClientClosedError('the sidecar refused this client; call setEndpoint() or connect()'));
    const id = `${this._prefix}${++this._seq}`;
    const frame = { ...fields, type, request_id: id };
    return new Promise((resolve, reject) => {
      const p = { type, frame, resolve, reject, sent: false, timer: null };
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new errors.RequestTimeoutError(
          `no reply to ${type} within ${timeoutMs} ms${p.sent ? '' : ' (never connected to send it)'}`,
          { requestId: id, requestType: type }));
      }, timeoutMs);
      this._pending.set(id, p);
      if (this._ready) this._sendRequest(p);
    });
  }

  _sendRequest(p) {
    try {
      this._ws.send(JSON.stringify(p.frame));
      p.sent = true;
    } catch (err) { // closing under us: the close handler decides
      this._log('warn', `could not send ${p.type}: ${err.message}`);
    }
  }

  // ── inserts ────────────────────────────────────────────────────────────────────────────

  /**
   * The one insert handler: `async (table, data, meta) => result`. Its result goes back as
   * the tool_result's `result`; a throw as `error` (with `retryable: true` when the error has
   * `retryable === true`). A call whose idempotency_key is already in the store is acked
   * with the stored result without calling the handler. Returns a function that removes it.
   */
  onInsert(handler) {
    if (typeof handler !== 'function') throw new TypeError('onInsert needs a function');
    this._insertHandler = handler;
    for (const frame of this._heldCalls.splice(0)) this._onToolCall(frame);
    return () => { if (this._insertHandler === handler) this._insertHandler = null; };
  }

  async _onToolCall(frame) {
    if (!this._insertHandler) { this._heldCalls.push(frame); return; }
    const key = typeof frame.idempotency_key === 'string' && frame.idempotency_key ? frame.idempotency_key : null;
    let outcome;
    if (key && this._inserting.has(key)) {
      outcome = { ...(await this._inserting.get(key)), duplicate: true }; // sent again while we work on it
    } else {
      const work = this._insert(frame, key);
      if (key) this._inserting.set(key, work);
      try {
        outcome = await work;
      } finally {
        if (key) this._inserting.delete(key);
      }
    }
    if (outcome.duplicate) this._emit('duplicate_insert', { key, frame });
    const reply = { type: 'tool_result', id: frame.id };
    if (outcome.error !== undefined) {
      reply.error = outcome.error;
      if (outcome.retryable) reply.retryable = true; // a daemon without retries takes a plain error
    } else {
      reply.result = outcome.result;
    }
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // the sidecar sends it again; the store answers
    try { ws.send(JSON.stringify(reply)); } catch { /* ditto */ }
  }

  /** Wait for one of `insertConcurrency` handler slots (FIFO: handlers start in arrival order). */
  _acquireSlot() {
    if (this._slotsBusy < this.options.insertConcurrency) {
      this._slotsBusy += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this._slotQueue.push(resolve));
  }

  _releaseSlot() {
    const next = this._slotQueue.shift();
    if (next) next();
    else this._slotsBusy -= 1;
  }

  async _insert(frame, key) {
    await this._acquireSlot();
    try {
      return await this._insertNow(frame, key);
    } finally {
      this._releaseSlot();
    }
  }

  async _insertNow(frame, key) {
    if (key) {
      let stored;
      try {
        stored = await this.idempotencyStore.get(key);
      } catch (err) {
        return { error: `the app's idempotency store failed: ${errorMessage(err)}`, retryable: true };
      }
      if (stored !== undefined) return { result: stored, duplicate: true };
    }
    const meta = {
      id: frame.id, action: frame.action, idempotencyKey: key, agentId: frame.agent_id ?? null,
      runId: frame.run_id ?? null, source: frame.source ?? null, confidence: frame.confidence ?? null, frame,
    };
    let result;
    try {
      result = await this._insertHandler(frame.table, frame.data, meta);
    } catch (err) {
      this._emit('insert_failed', { error: err, frame });
      return { error: errorMessage(err) || 'insert failed', retryable: Boolean(err && err.retryable === true) };
    }
    if (result === undefined) result = null;
    if (key) {
      try {
        await this.idempotencyStore.set(key, result);
      } catch (err) { // inserted all the same: ack it, but a re-send could not be recognised
        this._log('error', `the idempotency store could not record ${key}: ${errorMessage(err)}`);
      }
    }
    return { result };
  }

  /**
   * Emit to the app's listeners; one that throws is reported (logger, process warning) and
   * never breaks the client: the frame's own work (a reply, an ack) is done regardless.
   */
  _emit(event, arg) {
    try {
      return this.emit(event, arg);
    } catch (err) {
      this._log('error', `a '${event}' listener threw: ${err && err.stack ? err.stack : err}`);
      process.emitWarning(`sidecar client: a '${event}' listener threw: ${errorMessage(err)}`, 'SidecarListenerWarning');
      return true;
    }
  }

  _log(level, msg) {
    if (this.logger && typeof this.logger[level] === 'function') this.logger[level](`[sidecar-client] ${msg}`);
  }
}

// One method per request frame, generated from the schema: agent_upsert → agentUpsert(fields).
for (const [method, { type, shorthand }] of Object.entries(generated.REQUEST_METHODS)) {
  if (method in SidecarClient.prototype) continue;
  Object.defineProperty(SidecarClient.prototype, method, {
    value(fields, options) {
      if (typeof fields === 'string' && shorthand) fields = { [shorthand]: fields };
      return this.request(type, fields || {}, options);
    },
    writable: true,
    configurable: true,
  });
}

module.exports = { SidecarClient, backoffDelay };
