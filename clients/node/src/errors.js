'use strict';
// Typed errors: one class per thing the app decides on (start-up failures by exit code,
// refused requests by error-frame code, transport failures), all `instanceof SidecarError`.

class SidecarError extends Error {
  constructor(message, { code, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = new.target.name;
    /** A stable string code: the fatal line's `error`, the error frame's `code`, or ours. */
    this.code = code || 'sidecar_error';
  }
}

// ── start-up and process exit ───────────────────────────────────────────────────────────

/** The sidecar could not start (a fatal line, or an exit before any line). */
class SidecarStartError extends SidecarError {
  constructor(message, { code, exitCode = null, signal = null, stderr = [], fatal = null } = {}) {
    super(message, { code: code || 'startup_failed' });
    /** The process's exit code (the fatal line's `code`); null if it died by a signal. */
    this.exitCode = exitCode;
    this.signal = signal;
    /** The last lines the process wrote on stderr. */
    this.stderr = stderr;
    /** The parsed fatal line, when there was one. */
    this.fatal = fatal;
  }
}
/** Exit 2: the command line was not understood (a wrong `args` / `execArgs`). */
class UsageError extends SidecarStartError {}
/** Exit 3: another sidecar holds the data directory. */
class AlreadyRunningError extends SidecarStartError {}
/** Exit 4: the database is unusable (damaged, too new, read-only, a folder in its place). */
class DatabaseUnusableError extends SidecarStartError {}
/** Exit 5: a flag or environment variable is invalid (a weak token too). */
class InvalidConfigError extends SidecarStartError {}
/** Exit 6: another program holds a lock on the database; retry once it is closed. */
class DatabaseLockedError extends SidecarStartError {}
/** Exit 7: the data or log directory cannot be written (permissions, read-only, full disk). */
class CannotWriteError extends SidecarStartError {}
/** No ready line within `readyTimeoutMs` (the process was killed). */
class StartTimeoutError extends SidecarStartError {}

/** Exit code → class; 1 (a generic failure) and unknown codes are SidecarStartError. */
const START_ERRORS = {
  2: UsageError,
  3: AlreadyRunningError,
  4: DatabaseUnusableError,
  5: InvalidConfigError,
  6: DatabaseLockedError,
  7: CannotWriteError,
};

function startError(message, opts) {
  const Cls = START_ERRORS[opts.exitCode] || SidecarStartError;
  return new Cls(message, opts);
}

/** The sidecar ended after it was ready (a crash, a kill, a non-zero exit). */
class SidecarExitedError extends SidecarError {
  constructor(message, { exitCode = null, signal = null, stderr = [] } = {}) {
    super(message, { code: 'exited' });
    this.exitCode = exitCode;
    this.signal = signal;
    this.stderr = stderr;
  }
}

// ── connecting ───────────────────────────────────────────────────────────────────────────

/** HTTP 401 before the upgrade: the token is wrong (not retried). */
class TokenRefusedError extends SidecarError {
  constructor(message) { super(message, { code: 'token_refused' }); }
}
/** HTTP 403 before the upgrade: the Origin header is not allowed (not retried). */
class OriginRefusedError extends SidecarError {
  constructor(message) { super(message, { code: 'origin_refused' }); }
}

// ── requests ─────────────────────────────────────────────────────────────────────────────

/** The sidecar answered a request with an `error` frame. */
class RequestError extends SidecarError {
  constructor(message, { code, field = null, requestId = null, requestType = null, frame = null } = {}) {
    super(message, { code: code || 'request_error' });
    /** The field the sidecar named (invalid_field / missing_field), else null. */
    this.field = field;
    this.requestId = requestId;
    this.requestType = requestType;
    /** The error frame as received. */
    this.frame = frame;
  }
}
/** `not_found`: the agent or run does not exist. */
class NotFoundError extends RequestError {}
/** `invalid_field` / `missing_field`: the request's content was refused (see `field`). */
class InvalidRequestError extends RequestError {}
/** The frame itself was refused (`unknown_type`, `invalid_json`, `unsupported`, …). */
class ProtocolError extends RequestError {}
/** `database_locked` / `disk_full`: nothing was changed; retrying later can succeed. */
class BusyError extends RequestError {
  get retryable() { return true; }
}
/** `internal_error`: the sidecar failed; its log has details. */
class InternalError extends RequestError {}

const REQUEST_ERRORS = {
  not_found: NotFoundError,
  invalid_field: InvalidRequestError,
  missing_field: InvalidRequestError,
  invalid_json: ProtocolError,
  not_an_object: ProtocolError,
  missing_type: ProtocolError,
  unknown_type: ProtocolError,
  frame_too_large: ProtocolError,
  binary_frame: ProtocolError,
  unsupported_protocol: ProtocolError,
  unsupported: ProtocolError,
  unknown_tool_call: ProtocolError,
  database_locked: BusyError,
  disk_full: BusyError,
  internal_error: InternalError,
};

function requestError(frame, requestType = null) {
  const Cls = REQUEST_ERRORS[frame.code] || RequestError;
  return new Cls(frame.message || frame.code || 'request failed', {
    code: frame.code, field: frame.field ?? null, requestId: frame.request_id ?? null,
    requestType, frame,
  });
}

/** No reply within the request's timeout (the request may still take effect). */
class RequestTimeoutError extends SidecarError {
  constructor(message, { requestId = null, requestType = null } = {}) {
    super(message, { code: 'request_timeout' });
    this.requestId = requestId;
    this.requestType = requestType;
  }
}
/** The connection dropped after the request was sent: whether it took effect is unknown. */
class ConnectionLostError extends SidecarError {
  constructor(message, { requestId = null, requestType = null } = {}) {
    super(message, { code: 'connection_lost' });
    this.requestId = requestId;
    this.requestType = requestType;
  }
}
/** The client was closed (close()) or gave up (a refused token). */
class ClientClosedError extends SidecarError {
  constructor(message = 'the sidecar client is closed') { super(message, { code: 'client_closed' }); }
}

/** An error an onInsert handler throws to ask the sidecar to send the insert again later. */
class RetryableInsertError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'RetryableInsertError';
    this.retryable = true;
  }
}

module.exports = {
  SidecarError,
  SidecarStartError,
  UsageError,
  AlreadyRunningError,
  DatabaseUnusableError,
  InvalidConfigError,
  DatabaseLockedError,
  CannotWriteError,
  StartTimeoutError,
  SidecarExitedError,
  TokenRefusedError,
  OriginRefusedError,
  RequestError,
  NotFoundError,
  InvalidRequestError,
  ProtocolError,
  BusyError,
  InternalError,
  RequestTimeoutError,
  ConnectionLostError,
  ClientClosedError,
  RetryableInsertError,
  START_ERRORS,
  REQUEST_ERRORS,
  startError,
  requestError,
};
