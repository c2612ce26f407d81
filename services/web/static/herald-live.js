// herald-live.js: Herald's live event protocol for the browser (docs/protocol.md).
//
// An ES module, plain modern JavaScript, no build step and no dependencies. It follows the
// same rules as the Python client (services/core/session.py) and passes the same test
// vectors (tests/vectors/protocol, run by tests/js/protocol.test.mjs with `node --test`).
//
// API
//
//   import { ClientSession, LiveChannel } from "./herald-live.js";
//
//   ClientSession: the protocol without I/O. Feed it the text frames received, it returns
//   the messages to show; it says what to send and how long to wait before reconnecting.
//     const session = new ClientSession({ since: null, delays: { first: 0.1, cap: 5 } });
//     session.connectionMade();           // a connection opened (it resumes from `since`)
//     const msg = session.receiveText(text);   // a message, or null (duplicate, ...);
//                                         // throws ProtocolError if the first frame of a
//                                         // connection is not a welcome: close, reconnect
//     for (const out of session.dataToSend()) socket.send(out);   // after every call
//     session.subscribe(["task-id"]);     // only these tasks' events from now on
//     session.ping();  session.resume();  // queue a ping / a replay from the cursor
//     const wait = session.connectionLost(closeCode);   // seconds, or null: do not
//                                         // reconnect (4401: the session was revoked)
//     const wait2 = session.attemptFailed();   // an attempt that never opened
//     session.lastSeq, session.since, session.tasks, session.resets, session.welcomed
//   A message is { type, body, event }: `type` is "welcome", "event", "caught_up",
//   "reset" or "pong"; `body` the JSON object received; `event` (type "event" only)
//   { seq, task, event, ts, attempt, data }. Each event comes once, in seq order, across
//   reconnects. A "reset" means events the page was owed are gone (pruned, or the log was
//   recreated): reload the tasks from the HTTP API; the events that remain still follow.
//
//   LiveChannel: drives a browser WebSocket with a ClientSession: connects, resumes from
//   the cursor after a drop (`?since=N` on the URL: a browser cannot set headers), waits
//   the backoff between attempts, and stops for good on 4401.
//     const channel = new LiveChannel("ws://127.0.0.1:PORT/ws", {
//       since: null,                      // or the last seq a previous page saw
//       onMessage: (msg) => { ... },      // every message the session returns
//       onState: (state, retryIn) => { ... },   // "connecting", "connected",
//                                         // "reconnecting" (retryIn seconds), "closed"
//       delays: { first: 0.1, cap: 5, factor: 2, jitter: 0.2 },
//     });
//     channel.open();  channel.subscribe(ids);  channel.ping();  channel.close();
//     channel.lastSeq, channel.state, channel.closeCode, channel.closeReason
//   The browser authenticates the WebSocket itself (the session cookie of the page's
//   origin); a refused handshake looks like a dropped connection to a page (close 1006,
//   no status), so it is retried with the backoff.

export const VERSION = 1;

// Close codes (services/core/envelope.py): each close carries a reason in words.
export const CLOSE_GOING_AWAY = 1001; // the notifier is stopping: reconnect
export const CLOSE_UNSUPPORTED_DATA = 1003; // a binary frame
export const CLOSE_INVALID_PAYLOAD = 1007; // not JSON, not an object, wrong version or fields
export const CLOSE_POLICY_VIOLATION = 1008; // e.g. subscribed to too many tasks
export const CLOSE_INTERNAL_ERROR = 1011; // e.g. a keepalive ping went unanswered
export const CLOSE_TRY_AGAIN_LATER = 1013; // too far behind, or the log cannot be read
export const CLOSE_UNKNOWN_TYPE = 4400; // a message type the other side does not know
export const CLOSE_REVOKED = 4401; // its token or session was revoked: do not reconnect
export const CLOSE_TOO_MANY_CONNECTIONS = 4429; // retry later
export const FINAL_CLOSE_CODES = new Set([CLOSE_REVOKED]);

// Event types (services/core/events.py).
export const EVENT_TYPES = new Set([
  "queued", "started", "progress", "output", "cancel_requested", "retrying",
  "succeeded", "failed", "cancelled",
]);
export const TERMINAL_EVENTS = new Set(["succeeded", "failed", "cancelled"]);
const SERVER_TYPES = new Set(["welcome", "reset", "caught_up", "pong", "ping"]);

export class ProtocolError extends Error {
  /** A frame that breaks the protocol; the connection is closed with `code`. */
  constructor(code, reason) {
    super(reason);
    this.name = "ProtocolError";
    this.code = code;
    this.reason = reason;
  }
}

// ----------------------------------------------------------------------------- codec

function integer(value) {
  // As Python's int() takes the wire's numbers: an integer, or its decimal text.
  if (typeof value === "number" && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === "string" && /^\s*[+-]?\d+\s*$/.test(value)) return Number(value);
  return null;
}

function loadObject(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new ProtocolError(CLOSE_INVALID_PAYLOAD, "message is not valid JSON");
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new ProtocolError(CLOSE_INVALID_PAYLOAD, "message must be a JSON object");
  }
  if ("v" in obj && obj.v !== VERSION) {
    throw new ProtocolError(CLOSE_INVALID_PAYLOAD,
      `unsupported protocol version ${JSON.stringify(obj.v)}`);
  }
  return obj;
}

/** Decode a text frame from the notifier: { type, body, event }. Throws ProtocolError. */
export function decodeServerMessage(text) {
  if (typeof text !== "string") {
    throw new ProtocolError(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported");
  }
  const obj = loadObject(text);
  const type = obj.type;
  if (type === "event") {
    const seq = integer(obj.seq);
    const ts = typeof obj.ts === "number" || (typeof obj.ts === "string" && obj.ts.trim())
      ? Number(obj.ts) : Number.NaN;
    const attempt = "attempt" in obj ? integer(obj.attempt) : 0;
    const data = obj.data ?? {};
    if (seq === null || !("task" in obj) || !EVENT_TYPES.has(obj.event)
        || Number.isNaN(ts) || attempt === null || typeof data !== "object"
        || Array.isArray(data)) {
      throw new ProtocolError(CLOSE_INVALID_PAYLOAD, "malformed event");
    }
    const event = { seq, task: String(obj.task), event: obj.event, ts, attempt, data };
    return { type, body: obj, event };
  }
  if (SERVER_TYPES.has(type)) return { type, body: obj, event: null };
  throw new ProtocolError(CLOSE_UNKNOWN_TYPE, `unknown message type ${JSON.stringify(type)}`);
}

const compact = (obj) => JSON.stringify(obj);
export const encodePing = () => compact({ v: VERSION, type: "ping" });
export const encodeResume = (since) => compact({ v: VERSION, type: "resume", since });
export function encodeSubscribe(tasks, since) {
  const body = { v: VERSION, type: "subscribe", tasks: [...tasks].sort() };
  if (since !== null && since !== undefined) body.since = since;
  return compact(body);
}

// --------------------------------------------------------------------------- backoff

/**
 * Seconds to wait before each reconnection attempt: `first`, growing by `factor` up to
 * `cap`, each cut by up to `jitter` (a fraction) at random. Endless.
 */
export function* reconnectDelays({ first = 0.1, cap = 5.0, factor = 2.0, jitter = 0.2,
  rand = Math.random } = {}) {
  if (!(first > 0 && first <= cap && factor >= 1 && jitter >= 0 && jitter < 1)) {
    throw new RangeError("need 0 < first <= cap, factor >= 1 and 0 <= jitter < 1");
  }
  let delay = first;
  for (;;) {
    yield delay * (1 - jitter * rand());
    delay = Math.min(delay * factor, cap);
  }
}

// --------------------------------------------------------------------------- session

/**
 * One client's side of the event stream, across its connections (no I/O).
 *
 * Options: `since` (the last seq already seen; null for live events only) and `delays`
 * (the options of reconnectDelays; a fresh schedule after each welcome).
 */
export class ClientSession {
  constructor({ since = null, delays = {} } = {}) {
    if (since !== null && !(Number.isInteger(since) && since >= 0)) {
      throw new RangeError("since must be a non-negative integer");
    }
    this._last = since;
    this._delayOptions = delays;
    this._delays = reconnectDelays(delays);
    this._out = [];
    this._welcomed = false;
    this.resets = 0; // "reset" messages received: reloads the page was asked for
    this.ignored = 0; // frames dropped because they could not be decoded
    this.closeCode = null; // of the last connection lost
    this._tasks = null; // subscribed to these tasks only (null: all)
    this._pending = []; // requests not answered yet: {type, since, tasks}
    this._replaying = null; // the subscribe whose replay is coming: {since, tasks}
    this._narrowedAt = 0; // the last seq when it first subscribed
    this._seenPending = new Set(); // seqs returned while a subscribe was pending
    this._unanswered = new Set(); // tasks a lost connection did not confirm
  }

  /** The seq of the last event returned (or the head at the first welcome). */
  get lastSeq() { return this._last; }

  /** The resume point to give at the handshake (null: live events only). */
  get since() { return this._last; }

  /** The tasks subscribed to, sorted (null: every task). */
  get tasks() { return this._tasks === null ? null : [...this._tasks].sort(); }

  /** A connection is up and its welcome arrived: requests can be sent. */
  get welcomed() { return this._welcomed; }

  /** The texts to send now, in order (each returned once). */
  dataToSend() {
    const out = this._out;
    this._out = [];
    return out;
  }

  connectionMade() {
    for (const request of this._pending) {
      for (const task of request.tasks) this._unanswered.add(task);
    }
    this._pending = [];
    this._replaying = null;
    this._seenPending.clear();
    this._out = [];
    this._welcomed = false;
  }

  /** Seconds to wait before connecting again, or null: do not (4401). */
  connectionLost(code = null) {
    this._welcomed = false;
    this.closeCode = code;
    this._out = [];
    if (FINAL_CLOSE_CODES.has(code)) return null;
    return this._delays.next().value;
  }

  /** An attempt failed before its welcome: seconds to wait before the next one. */
  attemptFailed() {
    this._welcomed = false;
    return this._delays.next().value;
  }

  /** One received text: the message to hand on, or null. */
  receiveText(text) {
    let msg;
    try {
      msg = decodeServerMessage(text);
    } catch (error) {
      if (!this._welcomed || !(error instanceof ProtocolError)) throw error;
      this.ignored += 1;
      return null;
    }
    if (!this._welcomed) {
      if (msg.type !== "welcome") {
        throw new ProtocolError(CLOSE_INVALID_PAYLOAD, `no welcome but "${msg.type}"`);
      }
      this._onFirstWelcome(msg);
      return msg;
    }
    const replaying = this._replaying;
    if (msg.event !== null) {
      const ev = msg.event;
      if (replaying !== null && replaying.tasks.has(ev.task) && ev.seq > replaying.since) {
        // A task just added: its events before the stream's last seq come now.
        if (this._seenPending.has(ev.seq)) return null;
        this._last = Math.max(this._last ?? 0, ev.seq);
      } else if (this._last !== null && ev.seq <= this._last) {
        return null; // already returned (before a reconnect), or out of order
      } else {
        this._last = ev.seq;
      }
      if (this._tasks !== null) {
        if (!this._tasks.has(ev.task)) return null;
        if (TERMINAL_EVENTS.has(ev.event)) this._tasks.delete(ev.task);
      }
      if (this._pending.length) this._seenPending.add(ev.seq);
      else if (replaying === null && this._seenPending.size) this._seenPending.clear();
      return msg;
    }
    if (msg.type === "welcome" && this._pending.length) {
      const request = this._pending.shift();
      if (request.type === "subscribe") {
        if (this._tasks === null) { // narrowed: everything so far was returned
          this._tasks = new Set(request.tasks);
          this._narrowedAt = this._last ?? 0;
          this._replaying = { since: request.since, tasks: new Set() };
        } else {
          for (const task of request.tasks) this._tasks.add(task);
          this._replaying = { since: request.since, tasks: new Set(request.tasks) };
        }
        return null;
      }
      this._takeWelcome(msg); // a resume's: the replay from the cursor follows
    } else if (msg.type === "caught_up" && replaying !== null) {
      this._replaying = null;
      return null;
    } else if (msg.type === "welcome") {
      this._takeWelcome(msg);
    } else if (msg.type === "reset") {
      this.resets += 1;
    }
    return msg;
  }

  /** Only these tasks' events from now on (added to those before), reconnects included. */
  subscribe(taskIds) {
    const added = new Set(taskIds);
    if (this._welcomed) {
      this._sendSubscribe(added);
    } else if (this._tasks === null) {
      this._tasks = added;
      this._narrowedAt = this._last ?? 0;
    } else {
      for (const task of added) this._tasks.add(task);
    }
  }

  /** Ask for a replay from the cursor on this connection; false when not connected. */
  resume() {
    if (!this._welcomed) return false;
    this._pending.push({ type: "resume", since: 0, tasks: new Set() });
    this._out.push(encodeResume(this._last ?? 0));
    return true;
  }

  /** Queue a ping (answered by "pong"); false when not connected. */
  ping() {
    if (!this._welcomed) return false;
    this._out.push(encodePing());
    return true;
  }

  _onFirstWelcome(welcome) {
    this._welcomed = true;
    this._delays = reconnectDelays(this._delayOptions);
    this._takeWelcome(welcome);
    const unanswered = this._unanswered;
    this._unanswered = new Set();
    if (this._tasks !== null) {
      this._sendSubscribe(new Set(this._tasks));
      const more = new Set([...unanswered].filter((t) => !this._tasks.has(t)));
      if (more.size) this._sendSubscribe(more);
    } else if (unanswered.size) {
      this._sendSubscribe(unanswered);
    }
  }

  _takeWelcome(welcome) {
    const head = Number.isInteger(welcome.body.head) ? welcome.body.head : 0;
    const reset = Boolean(welcome.body.reset);
    if (reset || (this._last !== null && head < this._last)) {
      this._last = 0; // the log was recreated: every seq in it is new
    } else if (this._last === null) {
      this._last = head;
    }
  }

  _sendSubscribe(tasks) {
    const since = this._tasks !== null ? this._narrowedAt : (this._last ?? 0);
    this._pending.push({ type: "subscribe", since, tasks: new Set(tasks) });
    this._out.push(encodeSubscribe(tasks, since));
  }
}

// ----------------------------------------------------------------------- the channel

/**
 * A browser WebSocket driven by a ClientSession: reconnects with the backoff and resumes
 * from the cursor. Options: since, delays, onMessage(msg), onState(state, retryIn),
 * and, for tests, WebSocket (the class) and timers ({ setTimeout, clearTimeout }).
 */
export class LiveChannel {
  constructor(url, { since = null, delays = {}, onMessage = () => {}, onState = () => {},
    WebSocket: Socket = globalThis.WebSocket, timers = globalThis } = {}) {
    this.url = url;
    this.session = new ClientSession({ since, delays });
    this.onMessage = onMessage;
    this.onState = onState;
    this._Socket = Socket;
    this._timers = timers;
    this._ws = null;
    this._timer = null;
    this.state = "closed";
    this.closeCode = null;
    this.closeReason = "";
    this._closing = false;
  }

  get lastSeq() { return this.session.lastSeq; }

  /** Connect (and keep reconnecting until close()). */
  open() {
    this._closing = false;
    if (this._ws === null && this._timer === null) this._connect();
  }

  /** Close the connection; no reconnection follows. */
  close() {
    this._closing = true;
    if (this._timer !== null) this._timers.clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws !== null) ws.close(1000, "closed by the page");
    this._setState("closed");
  }

  subscribe(taskIds) { this.session.subscribe(taskIds); this._flush(); }

  ping() { this.session.ping(); this._flush(); }

  _url() {
    const url = new URL(this.url);
    url.searchParams.delete("since");
    if (this.session.since !== null) url.searchParams.set("since", String(this.session.since));
    return url.toString();
  }

  _setState(state, retryIn = null) {
    if (this.state === state && state !== "reconnecting") return;
    this.state = state;
    this.onState(state, retryIn);
  }

  _connect() {
    this._timer = null;
    if (this._closing) return;
    this._setState("connecting");
    const ws = new this._Socket(this._url());
    let opened = false;
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      this.session.connectionMade();
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      let msg;
      try {
        msg = this.session.receiveText(event.data);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        // A browser may close with 1000 or 3000-4999 only: the reason says what it was.
        ws.close(1000, `protocol error ${error.code}: ${error.reason}`.slice(0, 120));
        return;
      }
      if (msg !== null && msg.type === "welcome" && this.state !== "connected") {
        this._setState("connected");
      }
      this._flush();
      if (msg !== null) this.onMessage(msg);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.closeCode = event.code;
      this.closeReason = event.reason || "";
      if (this._closing) return;
      const wait = opened ? this.session.connectionLost(event.code)
        : this.session.attemptFailed();
      if (wait === null) {
        this._closing = true;
        this._setState("closed");
        return;
      }
      this._setState("reconnecting", wait);
      this._timer = this._timers.setTimeout(() => this._connect(), wait * 1000);
    };
  }

  _flush() {
    const ws = this._ws;
    const texts = this.session.dataToSend();
    if (ws === null || ws.readyState !== 1) return;
    for (const text of texts) ws.send(text);
  }
}
