/**
 * @ansflow/realtime-client: connect a page to ansflow-realtime and keep it connected.
 *
 * One runtime module on purpose: the build is plain `tsc` without a bundler, and a single file loads the same
 * way in a browser (`<script type="module">`), in Node 20, and in ts-jest (which would not map `./x.js` imports
 * back to `.ts` sources). The frame types live in the type-only `events.ts`.
 */
import type { ClientFrame, ConnectionFrame, Endpoint, RecoveryFrame, ServerEvents, ServerFrame, UnknownEvent } from './events.js';

export type * from './events.js';

/** The part of the WebSocket API the client uses: the browser's `WebSocket` and the `ws` package both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open', listener: () => void): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  addEventListener(type: 'close', listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', listener: () => void): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Why the client asks for a token: `refresh` is true when the last one was refused (expired or invalid). */
export interface TokenRequest {
  refresh: boolean;
  /** Why: the close reason that caused it (e.g. `token_expired`), or `token_expiring` for an in-place refresh. */
  reason?: string;
}

/** Returns the current access token; null for an anonymous socket. */
export type TokenProvider = (request: TokenRequest) => string | null | Promise<string | null>;

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'stopped';

export interface StateChange {
  state: ConnectionState;
  /** True once a reconnect resumed without losing events (until the next drop). */
  recovered: boolean;
  /** Consecutive failed attempts so far. */
  attempt: number;
  /** When reconnecting: how long until the next attempt. */
  retryInMs?: number;
  /** The close code/reason that caused this change, when there was one. */
  code?: number;
  reason?: string;
}

export interface StopInfo {
  code: number;
  reason: string;
}

/** What `on()` accepts: every server frame type, plus the client's own lifecycle events. */
export interface ClientEvents extends ServerEvents {
  /** Connection state changes. */
  state: StateChange;
  /** A reconnect resumed from `since`: the missed events follow. */
  recovered: RecoveryFrame;
  /** Events after `since` are gone: reload the snapshot (the execution endpoint sends `execution_status` next). */
  recoveryFailed: RecoveryFrame;
  /** The client gave up (final close code) or `close()` was called. */
  stopped: StopInfo;
  /** Every frame, including event types this client has no type for. */
  frame: ServerFrame | UnknownEvent;
}

export type Listener<T> = (payload: T) => void;

export interface BackoffOptions {
  /** Ceiling of the first retry's delay. */
  minMs: number;
  /** Largest ceiling: the delay never exceeds it. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 20_000 };

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential ceiling with full jitter (a uniform draw in
 * [0, ceiling]), so that the thousands of pages an instance drops on restart do not all come back at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxMs, options.minMs * 2 ** Math.max(0, attempt));
  return Math.round(random() * ceiling);
}

export type CloseAction = 'stop' | 'refresh-token' | 'reconnect-now' | 'reconnect';

/** What to do after the server closed with `code` (docs/protocol.md, close codes). */
export function closeAction(code: number): CloseAction {
  switch (code) {
    case 4001: // token_required / token_invalid / token_expired / token_user_mismatch
      return 'refresh-token';
    case 1001: // server shutting down: another instance will take us
    case 4008: // we read too slowly: resume from where we were
      return 'reconnect-now';
    case 4003: // forbidden: retrying will not change the answer
    case 4004: // no such endpoint or id
      return 'stop';
    default:
      // Other application codes (4000-4999) are final unless listed above; 4029 (too many connections) is a
      // limit that frees up, so it retries with back-off like the transport errors (1006, 1011, ...).
      return code >= 4000 && code <= 4999 && code !== 4029 ? 'stop' : 'reconnect';
  }
}

/** The `exp` claim of a JWT (seconds), read without verifying it: only to know when to refresh. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined; // not a JWT: the server's 4001 at expiry is the fallback
  }
}

export interface ConnectOptions {
  /** Base URL of the service, e.g. `wss://ansflow.example.com` or `ws://localhost:8001`. */
  url: string;
  endpoint: Endpoint;
  /** The execution, pipeline or project id (not used by `monitor` and `system`). */
  id?: number | string;
  /** Access token provider; omit (or return null) for an anonymous socket. */
  token?: TokenProvider;
  /** Accept `batch` frames (several events per frame): cheaper for busy executions. */
  batch?: boolean;
  /** Resume from this position on the first connect (e.g. kept across a page navigation). */
  since?: number;
  /** WebSocket implementation; default `globalThis.WebSocket` (pass the `ws` package in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Interval of `{"type":"ping"}` frames. Default 15 s. */
  pingIntervalMs?: number;
  /** A connection with no frame at all (event or pong) for this long is dead. Default 35 s. */
  deadAfterMs?: number;
  backoff?: BackoffOptions;
  /**
   * Ask the provider for a fresh token this long before the current one (a JWT) expires, and hand it to the
   * open socket in an `auth` frame, so the server does not close it with 4001 at `exp`. Default 30 s; 0 turns
   * it off (the socket is then closed at `exp` and reconnects with a new token).
   */
  refreshBeforeExpiryMs?: number;
  /** Random source of the jitter (tests pass a fixed one). */
  random?: () => number;
}

const OPEN = 1;

/** Service frames that carry a `position` meaning "latest known" rather than "this event's position". */
function isEventFrame(frame: { channel?: unknown; position?: unknown }): frame is { channel: string; position: number } {
  return typeof frame.channel === 'string' && typeof frame.position === 'number';
}

interface RawFrame {
  type: string;
  channel?: unknown;
  position?: unknown;
  events?: unknown;
}

function asFrame(value: unknown): RawFrame | null {
  if (typeof value !== 'object' || value === null) return null;
  const type = (value as { type?: unknown }).type;
  return typeof type === 'string' ? (value as RawFrame) : null;
}

/** A connection that stays up: reconnects, refreshes its token, resumes, de-duplicates. */
export class RealtimeClient {
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly pingIntervalMs: number;
  private readonly deadAfterMs: number;
  private readonly backoff: BackoffOptions;
  private readonly random: () => number;
  private readonly refreshBeforeExpiryMs: number;

  private socket: WebSocketLike | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token the current socket authenticated with. */
  private socketToken: string | null = null;
  private lastFrameAt = 0;
  private lastPingAt = 0;
  private attempt = 0;
  private refreshReason: string | undefined;
  private closed = false;
  private currentState: ConnectionState = 'connecting';
  /** The highest position delivered (or the server's position when none was): the next `since`. */
  private lastPosition: number | null;
  /** Last position delivered per channel, for de-duplication. */
  private readonly lastByChannel = new Map<string, number>();
  /** Events at or below the `since` given to `connect` were delivered before this client existed. */
  private floor: number | null;
  private isRecovered = false;
  /** The socket was opened with `since`: its first `recovery` frame answers it. */
  private expectRecovery = false;
  private dropped = 0;

  constructor(private readonly options: ConnectOptions) {
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!impl) throw new Error('No WebSocket implementation: pass the `WebSocket` option (e.g. the ws package)');
    if (options.endpoint !== 'monitor' && options.endpoint !== 'system' && options.id === undefined) {
      throw new Error(`The ${options.endpoint} endpoint needs an id`);
    }
    this.WebSocketImpl = impl;
    this.pingIntervalMs = options.pingIntervalMs ?? 15_000;
    this.deadAfterMs = options.deadAfterMs ?? 35_000;
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.random = options.random ?? Math.random;
    this.refreshBeforeExpiryMs = options.refreshBeforeExpiryMs ?? 30_000;
    this.lastPosition = options.since ?? null;
    this.floor = options.since ?? null;
  }

  /** The current connection state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The position of the last event delivered: what the next reconnect resumes from. */
  get position(): number | null {
    return this.lastPosition;
  }

  /** True after a reconnect resumed without a gap, until the next drop. */
  get recovered(): boolean {
    return this.isRecovered;
  }

  /** How many events were dropped as duplicates (position not after the last one delivered on their channel). */
  get duplicatesDropped(): number {
    return this.dropped;
  }

  /** Listen to a frame type or lifecycle event; returns a function that removes the listener. */
  on<K extends keyof ClientEvents>(type: K, listener: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof ClientEvents>(type: K, listener: Listener<ClientEvents[K]>): void {
    this.listeners.get(type)?.delete(listener);
  }

  /** Send a frame; false when not connected (frames are not queued: resend them on `connection`). */
  send(frame: ClientFrame): boolean {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Close for good: no reconnect after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, 'client_closed');
    this.stop({ code: 1000, reason: 'client_closed' });
  }

  /** Start connecting (called by `connect`). */
  start(): void {
    this.setState({ state: 'connecting', recovered: false, attempt: 0 });
    void this.open();
  }

  private async open(): Promise<void> {
    this.retryTimer = null;
    let token: string | null = null;
    if (this.options.token) {
      const refresh = this.refreshReason !== undefined;
      try {
        token = await this.options.token(refresh ? { refresh, reason: this.refreshReason } : { refresh });
      } catch {
        // The provider failed (e.g. the refresh endpoint is down): try again later, still asking for a refresh.
        if (!this.closed) this.scheduleReconnect('reconnect', 0, 'token_provider_failed');
        return;
      }
    }
    if (this.closed) return;
    this.refreshReason = undefined;

    const socket = new this.WebSocketImpl(this.buildUrl(token));
    this.socket = socket;
    this.socketToken = token;
    // Counts from creation: a socket that never opens (blackholed SYN) is as dead as one that stops talking.
    this.lastFrameAt = Date.now();
    this.lastPingAt = this.lastFrameAt;
    this.startHeartbeat();
    // Every handler checks `this.socket === socket`: an abandoned socket may still fire late events.
    socket.addEventListener('message', (event) => {
      if (this.socket === socket) this.onMessage(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket === socket) this.onClose(event.code, event.reason);
    });
    socket.addEventListener('error', () => {
      // A close event always follows; it carries the code we act on.
    });
  }

  private buildUrl(token: string | null): string {
    const { endpoint, id, batch } = this.options;
    const path = endpoint === 'monitor' || endpoint === 'system' ? `/ws/${endpoint}` : `/ws/${endpoint}/${String(id)}`;
    const url = new URL(this.options.url.replace(/\/+$/, '') + path);
    if (token) url.searchParams.set('token', token);
    if (this.lastPosition !== null) url.searchParams.set('since', String(this.lastPosition));
    this.expectRecovery = this.lastPosition !== null;
    if (batch) url.searchParams.set('batch', '1');
    return url.toString();
  }

  private onMessage(data: unknown): void {
    this.lastFrameAt = Date.now();
    if (typeof data !== 'string') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      return; // the service only sends JSON; ignore anything else rather than die
    }
    const frame = asFrame(parsed);
    if (!frame) return;
    if (frame.type === 'batch' && Array.isArray(frame.events)) {
      for (const inner of frame.events) {
        const event = asFrame(inner);
        if (event) this.dispatch(event);
      }
      return;
    }
    this.dispatch(frame);
  }

  private dispatch(frame: RawFrame): void {
    if (isEventFrame(frame)) {
      // Positions increase along each channel: an event not after the last one of its channel was already
      // delivered (a replay overlapping live delivery). Per channel rather than per socket, because a monitor
      // that subscribes to another execution with an older `since` legitimately receives lower positions.
      const last = this.lastByChannel.get(frame.channel);
      if ((last !== undefined && frame.position <= last) || (this.floor !== null && frame.position <= this.floor)) {
        this.dropped++;
        return;
      }
      this.lastByChannel.set(frame.channel, frame.position);
      if (this.lastPosition === null || frame.position > this.lastPosition) this.lastPosition = frame.position;
    } else if (frame.type === 'connection') {
      this.onConnection(frame as unknown as ConnectionFrame);
    } else if (frame.type === 'recovery') {
      this.onRecovery(frame as unknown as RecoveryFrame);
    }
    this.emit(frame.type as keyof ClientEvents, frame as never);
    this.emit('frame', frame as never);
  }

  private onConnection(frame: ConnectionFrame): void {
    // Without any event yet, the instance's latest position is where a reconnect must resume from; otherwise
    // events published while we are away would be missed.
    if (this.lastPosition === null && typeof frame.position === 'number') this.lastPosition = frame.position;
    this.attempt = 0;
    this.scheduleTokenRefresh();
    this.setState({ state: 'open', recovered: this.isRecovered, attempt: 0 });
  }

  private scheduleTokenRefresh(): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const exp = this.socketToken === null || this.refreshBeforeExpiryMs <= 0 ? undefined : tokenExpiry(this.socketToken);
    if (exp === undefined) return;
    const remaining = exp * 1000 - Date.now();
    // A token shorter-lived than the margin is refreshed half-way through what is left of it.
    const delay = remaining > this.refreshBeforeExpiryMs * 2 ? remaining - this.refreshBeforeExpiryMs : Math.max(0, remaining / 2);
    const socket = this.socket;
    this.expiryTimer = setTimeout(() => void this.refreshInPlace(socket), delay);
  }

  private async refreshInPlace(socket: WebSocketLike | null): Promise<void> {
    this.expiryTimer = null;
    let token: string | null;
    try {
      token = (await this.options.token?.({ refresh: true, reason: 'token_expiring' })) ?? null;
    } catch {
      return; // the server closes with 4001 at expiry and the reconnect asks the provider again
    }
    if (token === null || socket === null || this.socket !== socket || socket.readyState !== OPEN) return;
    this.socketToken = token;
    socket.send(JSON.stringify({ type: 'auth', token }));
    this.scheduleTokenRefresh();
  }

  private onRecovery(frame: RecoveryFrame): void {
    // Only the recovery that answers the connection's `since` concerns the whole socket; a monitor's
    // `subscribe_execution` with `since` gets its own, which the page handles for that execution.
    if (!this.expectRecovery) return;
    this.expectRecovery = false;
    if (frame.recovered) {
      this.isRecovered = true;
      this.setState({ state: 'open', recovered: true, attempt: 0 });
      this.emit('recovered', frame);
      return;
    }
    // The gap cannot be filled: start again from the server's current position (which may be lower than ours if
    // the server's positions restarted), and let the page reload its snapshot.
    this.lastPosition = typeof frame.position === 'number' ? frame.position : null;
    this.lastByChannel.clear();
    this.floor = null;
    this.isRecovered = false;
    this.emit('recoveryFailed', frame);
  }

  private onClose(code: number, reason: string): void {
    this.socket = null;
    this.stopHeartbeat();
    if (this.closed) return;
    const action = closeAction(code);
    if (action === 'stop') {
      this.closed = true;
      this.stop({ code, reason });
      return;
    }
    if (action === 'refresh-token') this.refreshReason = reason || 'token_invalid';
    this.scheduleReconnect(action, code, reason);
  }

  private scheduleReconnect(action: CloseAction, code: number, reason: string): void {
    this.isRecovered = false;
    if (action === 'reconnect-now') this.attempt = 0;
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt++;
    this.setState({ state: 'reconnecting', recovered: false, attempt: this.attempt, retryInMs: delay, code, reason });
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    // One coarse timer instead of a timeout reset per frame: busy executions deliver hundreds of frames a second.
    const tick = Math.max(50, Math.min(1000, this.pingIntervalMs / 2, this.deadAfterMs / 4));
    this.heartbeatTimer = setInterval(() => this.heartbeat(), tick);
  }

  private heartbeat(): void {
    const socket = this.socket;
    if (!socket) return;
    const now = Date.now();
    if (now - this.lastFrameAt > this.deadAfterMs) {
      // Half-open TCP: a close handshake would never complete, so abandon the socket instead of waiting for it.
      this.socket = null;
      this.stopHeartbeat();
      try {
        socket.close(4000, 'dead_connection');
      } catch {
        // closing a socket that never opened can throw in some implementations; it is abandoned anyway
      }
      this.scheduleReconnect('reconnect', 4000, 'dead_connection');
      return;
    }
    if (socket.readyState === OPEN && now - this.lastPingAt >= this.pingIntervalMs) {
      this.lastPingAt = now;
      socket.send('{"type":"ping"}');
    }
  }

  /** Stops the timers that belong to one socket. */
  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }

  private clearTimers(): void {
    this.stopHeartbeat();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private stop(info: StopInfo): void {
    this.clearTimers();
    this.isRecovered = false;
    this.setState({ state: 'stopped', recovered: false, attempt: this.attempt, code: info.code, reason: info.reason });
    this.emit('stopped', info);
  }

  private setState(change: StateChange): void {
    this.currentState = change.state;
    this.emit('state', change);
  }

  private emit<K extends keyof ClientEvents>(type: K, payload: ClientEvents[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<ClientEvents[K]>)(payload);
      } catch (error) {
        // A failing listener must not break delivery to the others nor the connection: report it the way
        // EventTarget does, asynchronously.
        setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }
}

/** Connect to an endpoint; the returned client reconnects until `close()` or a final close code. */
export function connect(options: ConnectOptions): RealtimeClient {
  const client = new RealtimeClient(options);
  client.start();
  return client;
}
