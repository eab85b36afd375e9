// The package's API. Frame types come from protocol.d.ts, which scripts/gen-types.js
// generates from docs/protocol.schema.json (never edit that one by hand).

import { EventEmitter } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import type {
  AgentDeleteResult,
  AgentUpsertResult,
  ClientFrame,
  ErrorCode,
  FatalErrorCode,
  HelloResult,
  PushEvents,
  RequestFields,
  RequestMethods,
  RequestOptions,
  Requests,
  RequestType,
  SidecarFrame,
  ToolCall,
} from './protocol';

export * from './protocol';

// ── spawning ────────────────────────────────────────────────────────────────────────────

export interface SpawnOptions {
  /** The sidecar executable (the bundled binary, or the venv's `sidecar`). */
  executable: string;
  /** Arguments before `serve` (e.g. `['-m', 'sidecar']` when `executable` is python). */
  execArgs?: string[];
  /** Extra `sidecar serve` flags, after the generated ones. */
  args?: string[];
  /** `--data-dir`: the SQLite store, lock and token file (default: the platform's). */
  dataDir?: string;
  logDir?: string;
  modelDir?: string;
  /** `--allowed-root` once per folder the user allowed local agents to read. */
  allowedRoots?: string[];
  /** Extra environment (SIDECAR_TOKEN is always the launch token). */
  env?: Record<string, string>;
  /** `--port`; 0 (default) picks a free one. */
  port?: number;
  /** `--parent-pid` (default: this process); null to leave it out. */
  parentPid?: number | null;
  /** `--watch-stdin` with a stdin pipe held open (default true): exits when we are gone. */
  watchStdin?: boolean;
  /** The per-launch token (default: 32 random bytes, base64url). At least 16 characters. */
  token?: string;
  /** Reject with StartTimeoutError (and kill it) after this long without a line (60 s). */
  readyTimeoutMs?: number;
  /** Called with each stderr line (default: logger.info). */
  onStderr?: (line: string) => void;
  logger?: Logger;
  cwd?: string;
}

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface ReadyLine {
  event: 'ready';
  port: number;
  pid: number;
  version: string;
  protocol: number;
  host: string;
  token_file?: string;
}

export interface FatalLine {
  event: 'fatal';
  code: number;
  error: FatalErrorCode | string;
  message: string;
}

export interface ExitInfo {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** null on a clean exit (code 0). */
  error: SidecarExitedError | SidecarStartError | null;
}

export interface Endpoint {
  url?: string;
  host?: string;
  port?: number;
  token: string;
}

export declare class SidecarProcess extends EventEmitter {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly host: string;
  readonly version: string;
  readonly protocol: number;
  readonly token: string;
  readonly url: string;
  readonly ready: ReadyLine;
  readonly endpoint: { url: string; token: string };
  readonly stderr: string[];
  readonly running: boolean;
  readonly exited: Promise<ExitInfo>;
  stop(options?: { timeoutMs?: number }): Promise<ExitInfo>;
  on(event: 'exit', listener: (info: ExitInfo) => void): this;
  on(event: 'stderr', listener: (line: string) => void): this;
  once(event: 'exit', listener: (info: ExitInfo) => void): this;
  once(event: 'stderr', listener: (line: string) => void): this;
}

/** Spawn `sidecar serve`; resolves at the ready line, rejects with a SidecarStartError. */
export declare function spawnSidecar(options: SpawnOptions): Promise<SidecarProcess>;
export declare function generateToken(): string;

export interface SuperviseOptions {
  /** Delay before each respawn (default {initialMs: 500, maxMs: 30000, factor: 2}, jittered). */
  backoff?: BackoffOptions;
  /** Give up ('give_up', code crash_loop) after this many restarts within windowMs (10 in 60 s). */
  maxRestarts?: number;
  windowMs?: number;
}

/** Keeps one sidecar running: respawns after an unexpected exit, gives up on errors that do not heal. */
export declare class SidecarSupervisor extends EventEmitter {
  constructor(spawnOptions: SpawnOptions, options?: SuperviseOptions);
  readonly current: SidecarProcess | null;
  readonly state: 'idle' | 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';
  readonly error: Error | null;
  start(): Promise<SidecarProcess>;
  /** The running process's endpoint; waits while it restarts. */
  endpoint(): Promise<{ url: string; token: string }>;
  stop(options?: { timeoutMs?: number }): Promise<ExitInfo | null>;
  on(event: 'spawn', listener: (proc: SidecarProcess) => void): this;
  on(event: 'exit', listener: (info: ExitInfo) => void): this;
  on(event: 'restart', listener: (info: { attempt: number; delayMs: number; error: Error }) => void): this;
  on(event: 'give_up', listener: (error: Error) => void): this;
}

/** Spawn a sidecar and keep it running; resolves once the first one is ready. */
export declare function superviseSidecar(spawnOptions: SpawnOptions, options?: SuperviseOptions): Promise<SidecarSupervisor>;

// ── the connection ──────────────────────────────────────────────────────────────────────

export interface InsertMeta {
  id: string;
  action: string;
  idempotencyKey: string | null;
  agentId: string | null;
  runId: string | null;
  source: Record<string, unknown> | null;
  confidence: number | null;
  frame: ToolCall;
}

/** Returns the inserted row's result (e.g. `{id}`); throw to fail the insert. */
export type InsertHandler = (table: string, data: Record<string, unknown>, meta: InsertMeta) => unknown | Promise<unknown>;

/** Where the app remembers inserted idempotency keys (ideally its own database). */
export interface IdempotencyStore {
  /** The stored result, or undefined when the key was never stored. */
  get(key: string): unknown | undefined | Promise<unknown | undefined>;
  /** Store durably before resolving. */
  set(key: string, result: unknown): void | Promise<void>;
}

export declare class MemoryIdempotencyStore implements IdempotencyStore {
  constructor(options?: { max?: number });
  readonly size: number;
  get(key: string): unknown | undefined;
  set(key: string, result: unknown): void;
}

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
}

export interface ClientOptions {
  /** Where to connect; a function (or a SidecarProcess) is asked again before every attempt. */
  endpoint?: Endpoint | SidecarProcess | SidecarSupervisor | (() => Endpoint | SidecarProcess | Promise<Endpoint | SidecarProcess>);
  url?: string;
  port?: number;
  token?: string;
  /** "writer" (default) takes inserts; "observer" gets run frames and replies only. */
  role?: 'writer' | 'observer';
  clientName?: string;
  deviceId?: string;
  requestTimeoutMs?: number;
  pingIntervalMs?: number;
  handshakeTimeoutMs?: number;
  /** Insert handlers running at once (default 4; 1 = one at a time, in arrival order). */
  insertConcurrency?: number;
  backoff?: BackoffOptions;
  idempotencyStore?: IdempotencyStore;
  logger?: Logger;
  /** An Origin header to send (the main process sends none). */
  origin?: string;
}

export interface ClientEvents extends PushEvents {
  connected: HelloResult;
  disconnected: { code: number; reason: string };
  reconnecting: { attempt: number; delayMs: number; error: Error };
  refused: TokenRefusedError | OriginRefusedError | RequestError;
  frame: SidecarFrame;
  protocol_error: RequestError;
  insert_failed: { error: unknown; frame: ToolCall };
  duplicate_insert: { key: string; frame: ToolCall };
}

export interface SidecarClient extends RequestMethods {}
export declare class SidecarClient extends EventEmitter {
  constructor(options?: ClientOptions);
  readonly role: 'writer' | 'observer';
  readonly state: 'idle' | 'connecting' | 'open' | 'waiting' | 'refused' | 'closed';
  readonly connected: boolean;
  readonly helloResult: HelloResult | null;
  readonly idempotencyStore: IdempotencyStore;
  readonly agents: {
    upsert(agent: Record<string, unknown>, options?: RequestOptions): Promise<AgentUpsertResult>;
    list(kind?: string, options?: RequestOptions): Promise<Array<Record<string, unknown>>>;
    remove(agentId: string, options?: RequestOptions): Promise<AgentDeleteResult>;
  };
  connect(): Promise<HelloResult>;
  waitConnected(options?: { timeoutMs?: number }): Promise<HelloResult>;
  setEndpoint(endpoint: ClientOptions['endpoint']): void;
  request<T extends RequestType>(type: T, fields?: RequestFields<T>, options?: RequestOptions): Promise<Requests[T]['result']>;
  request(type: string, fields?: Record<string, unknown>, options?: RequestOptions): Promise<SidecarFrame>;
  onInsert(handler: InsertHandler): () => void;
  close(): Promise<void>;
  on<K extends keyof ClientEvents>(event: K, listener: (frame: ClientEvents[K]) => void): this;
  on(event: string, listener: (frame: any) => void): this;
  once<K extends keyof ClientEvents>(event: K, listener: (frame: ClientEvents[K]) => void): this;
  once(event: string, listener: (frame: any) => void): this;
  off<K extends keyof ClientEvents>(event: K, listener: (frame: ClientEvents[K]) => void): this;
  off(event: string, listener: (frame: any) => void): this;
}

export declare function backoffDelay(backoff: Required<BackoffOptions>, attempt: number): number;

export declare const protocol: {
  PROTOCOL_VERSION: number;
  FRAMES: Record<string, { direction: 'client' | 'sidecar'; required: string[] }>;
  REQUESTS: Record<string, string | null>;
  REQUEST_METHODS: Record<string, { type: string; shorthand: string | null }>;
  PUSHES: string[];
  FATAL_ERRORS: Record<string, number>;
  ERROR_CODES: string[];
};

// ── errors ──────────────────────────────────────────────────────────────────────────────

export declare class SidecarError extends Error {
  code: string;
}
export declare class SidecarStartError extends SidecarError {
  code: FatalErrorCode | 'spawn_failed' | 'ready_timeout' | 'bad_ready_line' | 'exited_before_ready' | 'usage' | string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stderr: string[];
  fatal: FatalLine | null;
}
export declare class UsageError extends SidecarStartError {}
export declare class AlreadyRunningError extends SidecarStartError {}
export declare class DatabaseUnusableError extends SidecarStartError {}
export declare class InvalidConfigError extends SidecarStartError {}
export declare class DatabaseLockedError extends SidecarStartError {}
export declare class CannotWriteError extends SidecarStartError {}
export declare class StartTimeoutError extends SidecarStartError {}
export declare class SidecarExitedError extends SidecarError {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stderr: string[];
}
export declare class TokenRefusedError extends SidecarError {}
export declare class OriginRefusedError extends SidecarError {}
export declare class RequestError extends SidecarError {
  code: ErrorCode | string;
  field: string | null;
  requestId: string | null;
  requestType: string | null;
  frame: SidecarFrame | null;
}
export declare class NotFoundError extends RequestError {}
export declare class InvalidRequestError extends RequestError {}
export declare class ProtocolError extends RequestError {}
export declare class BusyError extends RequestError {
  readonly retryable: true;
}
export declare class InternalError extends RequestError {}
export declare class RequestTimeoutError extends SidecarError {
  requestId: string | null;
  requestType: string | null;
}
export declare class ConnectionLostError extends SidecarError {
  requestId: string | null;
  requestType: string | null;
}
export declare class ClientClosedError extends SidecarError {}
/** Throw from an insert handler to have the sidecar send the insert again later. */
export declare class RetryableInsertError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
  readonly retryable: true;
}
export declare const START_ERRORS: Record<number, typeof SidecarStartError>;
export declare const REQUEST_ERRORS: Record<string, typeof RequestError>;
export declare function startError(message: string, options: Record<string, unknown>): SidecarStartError;
export declare function requestError(frame: Record<string, unknown>, requestType?: string | null): RequestError;

// keeps ClientFrame referenced for editors that list this file's imports
export type { ClientFrame };
