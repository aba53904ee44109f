// drover.js — the browser client for drover's client protocol v1.
//
//   import { DroverSession } from './drover.js';
//   const s = await DroverSession.open(null, { pool: 'default' });
//   const results = await s.execute({ cmd: 'echo', data: 'hi' });
//   await s.logout();
//
// The protocol logic lives in small pure functions and the TaskTracker class,
// none of which touch the network, so they can be tested without a browser.
// DroverSession wires them to a WebSocket; the constructor is injectable
// (options.WebSocket) for the same reason.

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * An error with a protocol code: the server's error codes (no_capacity,
 * task_failed, instance_lost, …) plus the client's own: disconnected, closed,
 * aborted, bad_url, bad_frame, bad_request.
 */
export class DroverError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'DroverError';
    this.code = code;
    Object.assign(this, extra);
  }
}

// --- pure protocol helpers -------------------------------------------------

/**
 * The WebSocket URL of the manager that serves the page at base: the ws
 * endpoint is a sibling of the directory the UI is mounted in (/ui/ → /ws),
 * which also holds when a proxy adds a path prefix in front of both.
 */
export function defaultURL(base) {
  const u = new URL('../ws', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.hash = '';
  return u.toString();
}

/**
 * Builds the connect URL from a ws(s):// or http(s):// URL and the connect
 * options. labels is a plain object; each entry becomes label.KEY=VALUE.
 */
export function buildURL(url, { pool, wait, resume, labels } = {}) {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new DroverError('bad_url', `unsupported URL scheme ${u.protocol}`);
  }
  const q = u.searchParams;
  if (pool != null && pool !== '') q.set('pool', String(pool));
  if (wait === false) q.set('wait', 'false');
  if (resume) q.set('resume', String(resume));
  else q.delete('resume');
  if (labels) {
    for (const [k, v] of Object.entries(labels)) q.set(`label.${k}`, String(v));
  }
  u.hash = '';
  return u.toString();
}

/**
 * The WebSocket subprotocols that carry a token (a JWT or an API key) to
 * the manager: browsers cannot set an Authorization header on a
 * WebSocket. The manager answers with "drover", never with the token.
 */
export function tokenProtocols(token) {
  return ['drover', `bearer.${token}`];
}

/**
 * Parses one text frame. It throws a DroverError with code bad_frame for
 * anything that is not a protocol v1 object; unknown types pass, so that a
 * newer server does not break an older client.
 */
export function parseFrame(text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch (e) {
    throw new DroverError('bad_frame', `frame is not JSON: ${e.message}`);
  }
  if (f === null || typeof f !== 'object' || Array.isArray(f)) {
    throw new DroverError('bad_frame', 'frame is not a JSON object');
  }
  if (typeof f.type !== 'string') {
    throw new DroverError('bad_frame', 'frame has no string "type"');
  }
  switch (f.type) {
    case 'result':
    case 'done':
      if (!validID(f.id)) throw new DroverError('bad_frame', `${f.type} frame without an id`);
      break;
    case 'welcome':
      if (typeof f.session !== 'string') throw new DroverError('bad_frame', 'welcome frame without a session');
      break;
    case 'event':
      if (typeof f.event !== 'string') throw new DroverError('bad_frame', 'event frame without an event name');
      break;
  }
  return f;
}

function validID(id) {
  return typeof id === 'number' || typeof id === 'string';
}

/** The DroverError an error frame carries. */
export function errorFromFrame(f) {
  const e = f && typeof f.error === 'object' && f.error !== null ? f.error : {};
  const code = typeof e.code === 'string' && e.code ? e.code : 'internal';
  const message = typeof e.message === 'string' ? e.message : '';
  const extra = {};
  if (f && validID(f.id)) extra.taskId = f.id;
  return new DroverError(code, message, extra);
}

/** Encodes a task frame. */
export function taskFrame(id, data) {
  return JSON.stringify({ type: 'task', id, data });
}

/** Encodes the logout frame. */
export function logoutFrame() {
  return '{"type":"logout"}';
}

/**
 * Whether a close with this code leaves the session resumable. Only an
 * abnormal drop (1006: no close frame) or a server going away or restarting
 * does; a normal close, a policy or size violation, "try again later" and
 * application codes end the session.
 */
export function shouldResume(code) {
  return code === 1006 || code === 1001 || code === 1012 || code === 1014;
}

/** The error code for a connection that closed before it was welcomed. */
export function closeErrorCode(code) {
  switch (code) {
    case 1013: return 'no_capacity';
    case 1008: return 'rejected';
    case 1003:
    case 1007: return 'bad_request';
    case 1009: return 'too_large';
    default: return shouldResume(code) ? 'disconnected' : 'closed';
  }
}

/** The error for a connection that closed before it was welcomed. */
export function errorFromClose(code, reason) {
  const c = closeErrorCode(code);
  return new DroverError(c, reason || `connection closed (${code})`, { closeCode: code });
}

/**
 * The delay in ms before reconnect attempt n (1-based): exponential from
 * base up to max, with up to 20% jitter so that clients of a restarted
 * manager do not come back in lockstep. rand is injectable for tests.
 */
export function backoffDelay(attempt, { base = 250, max = 5000 } = {}, rand = Math.random) {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp * (1 - 0.2 * rand()));
}

// Event names the session dispatches itself; a server event with one of
// these names is only dispatched as "event".
const RESERVED_EVENTS = new Set([
  'welcome', 'queued', 'resumed', 'reconnecting', 'event', 'close', 'frame', 'error', 'statechange',
]);

/** The name under which a server event is also dispatched, or null. */
export function eventName(name) {
  return /^[a-z][a-z0-9_]*$/.test(name) && !RESERVED_EVENTS.has(name) ? name : null;
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else console.error(err);
}

/**
 * TaskTracker keeps the tasks of one session that await their results.
 * Results and done frames are matched by id; binary frames carry no id and
 * belong to the oldest unfinished task, because an instance runs a session's
 * tasks in order. It knows nothing of sockets.
 */
export class TaskTracker {
  constructor() {
    this._tasks = new Map(); // insertion order = send order
    this._next = 0;
  }

  /** The number of unfinished tasks. */
  get size() {
    return this._tasks.size;
  }

  /** A fresh task id: 1, 2, 3, … */
  nextID() {
    this._next += 1;
    return this._next;
  }

  /**
   * Registers task id. The promise resolves to the results (JSON values and
   * ArrayBuffers, in arrival order) on done and rejects on error.
   */
  add(id, { onResult, onBinary } = {}) {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this._tasks.set(key(id), { id, results: [], onResult, onBinary, resolve, reject });
    return promise;
  }

  /** Handles a result frame; false when the id is unknown. */
  result(id, data) {
    const t = this._tasks.get(key(id));
    if (!t) return false;
    t.results.push(data);
    if (t.onResult) call(t.onResult, data, t.id);
    return true;
  }

  /** Handles a binary frame; false when no task is unfinished. */
  binary(data) {
    const first = this._tasks.values().next();
    if (first.done) return false;
    const t = first.value;
    t.results.push(data);
    if (t.onBinary) call(t.onBinary, data, t.id);
    return true;
  }

  /** Handles a done frame; false when the id is unknown. */
  done(id) {
    const t = this._take(id);
    if (!t) return false;
    t.resolve(t.results);
    return true;
  }

  /** Rejects task id with err; false when the id is unknown. */
  fail(id, err) {
    const t = this._take(id);
    if (!t) return false;
    err.taskId = t.id;
    err.results = t.results;
    t.reject(err);
    return true;
  }

  /** Rejects every unfinished task with an error made by mkErr(). */
  failAll(mkErr) {
    const tasks = [...this._tasks.values()];
    this._tasks.clear();
    for (const t of tasks) {
      const err = mkErr();
      err.taskId = t.id;
      err.results = t.results;
      t.reject(err);
    }
  }

  _take(id) {
    const k = key(id);
    const t = this._tasks.get(k);
    if (t) this._tasks.delete(k);
    return t;
  }
}

// Ids are echoed verbatim, but a server may turn 7 into "7"; both match.
function key(id) {
  return String(id);
}

function call(fn, data, id) {
  try {
    fn(data, id);
  } catch (e) {
    report(e);
  }
}

// --- the session ------------------------------------------------------------

/**
 * DroverSession is one session of protocol v1 over a WebSocket.
 *
 * Properties: session, instance, resumeToken (from welcome), position (while
 * queued), state: connecting | queued | open | reconnecting | closed.
 *
 * Events (CustomEvent, details in parentheses):
 *   queued ({position})          while waiting for an instance
 *   welcome (frame)              bound, on open and after each resume
 *   event (frame)                every server event; also dispatched under
 *                                its own name (instance_lost, draining, …)
 *   reconnecting ({attempt, delay, code})
 *   resumed (frame)              the welcome of a resumed connection
 *   error (DroverError)          an error frame no task claims, a bad frame
 *   frame ({dir:'in'|'out', text?, frame?, binary?})  every frame, for logs
 *   statechange ({state})
 *   close ({code, reason, error}) once, when the session is over
 */
export class DroverSession extends EventTarget {
  /**
   * Opens a session. url may be null to use the page's manager. Options:
   * pool, wait (false: fail with no_capacity instead of queueing), resume
   * (a token), labels (object), retries (resume attempts, default 5),
   * backoff ({base, max} ms), signal (AbortSignal), on ({type: listener},
   * added before connecting, to see queued and frame events of the open),
   * token (a JWT or API key, sent as a subprotocol), WebSocket
   * (constructor). Resolves with the session once welcomed.
   */
  static open(url, options = {}) {
    const s = new DroverSession(url, options);
    return s.connect().then(() => s);
  }

  constructor(url, options = {}) {
    super();
    const page = typeof location !== 'undefined' ? location.href : null;
    this.url = url || (page ? defaultURL(page) : null);
    this.options = options;
    this.session = null;
    this.instance = null;
    this.resumeToken = options.resume || null;
    this.position = null;
    this.state = 'connecting';
    this._WS = options.WebSocket || globalThis.WebSocket;
    this._retries = options.retries ?? 5;
    this._tasks = new TaskTracker();
    this._ws = null;
    this._ended = false;
    this._timer = null;
    this._wake = null;
    this._closeWaiters = [];
    this._connecting = null;
    for (const [type, fn] of Object.entries(options.on || {})) this.addEventListener(type, fn);
  }

  /** Whether tasks can be sent now. */
  get connected() {
    return this.state === 'open';
  }

  /**
   * Sends one task. Resolves with the array of its results on done; rejects
   * with a DroverError (err.code, err.taskId, err.results) on an error frame,
   * on instance_lost, or with code disconnected when the connection drops.
   * onResult(data, id) and onBinary(arrayBuffer, id) see results as they come.
   */
  execute(data, { onResult, onBinary } = {}) {
    if (this.state !== 'open') {
      const code = this.state === 'closed' ? 'closed' : 'disconnected';
      return Promise.reject(new DroverError(code, `session is ${this.state}`));
    }
    const id = this._tasks.nextID();
    let text;
    try {
      text = taskFrame(id, data);
    } catch (e) {
      return Promise.reject(new DroverError('bad_request', `task data: ${e.message}`));
    }
    const p = this._tasks.add(id, { onResult, onBinary });
    this._send(text, { type: 'task', id, data });
    return p;
  }

  /**
   * Ends the session: sends logout, then closes with 1000. The instance is
   * released at once. Resolves when the socket is closed.
   */
  logout() {
    if (this._ws && this._ws.readyState === 1) this._send(logoutFrame(), { type: 'logout' });
    return this.close();
  }

  /** Closes with 1000, which also ends the session. Resolves when closed. */
  close(code = 1000, reason = '') {
    if (this.state === 'closed') return Promise.resolve();
    const done = new Promise((res) => this._closeWaiters.push(res));
    this._ended = true;
    this._tasks.failAll(() => new DroverError('closed', 'session closed'));
    if (this._ws) {
      try {
        this._ws.close(code, reason);
      } catch {
        this._finish(code, reason, null);
      }
    } else {
      this._finish(code, reason, null);
    }
    return done;
  }

  /**
   * Makes the first connection, for a session made with the constructor;
   * resolves with the welcome frame. A drop before welcome is not resumed.
   * Calling it again returns the same promise.
   */
  connect() {
    if (!this._connecting) this._connecting = this._connect();
    return this._connecting;
  }

  _connect() {
    const signal = this.options.signal;
    if (signal) {
      if (signal.aborted) return Promise.reject(new DroverError('aborted', 'open aborted'));
      signal.addEventListener('abort', () => {
        if (this.state === 'connecting' || this.state === 'queued') {
          this._abortErr = new DroverError('aborted', 'open aborted');
          this.close();
        }
      }, { once: true });
    }
    return this._dial(this.resumeToken).catch((err) => {
      let e = err;
      if (this._abortErr) e = this._abortErr;
      else if (this._ended) e = new DroverError('closed', 'session closed before it was welcomed');
      this._finish(e.closeCode ?? 1000, e.message, e);
      throw e;
    });
  }

  // _dial connects once and resolves on welcome. Before welcome it handles
  // queued and error frames itself; after welcome, frames go to _onFrame.
  _dial(resume) {
    return new Promise((resolve, reject) => {
      let url;
      let ws;
      try {
        url = buildURL(this.url, { ...this.options, resume });
        ws = this.options.token ? new this._WS(url, tokenProtocols(this.options.token)) : new this._WS(url);
      } catch (e) {
        reject(e instanceof DroverError ? e : new DroverError('bad_url', e.message));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this._ws = ws;
      let welcomed = false;
      let openErr = null;

      ws.onmessage = (ev) => {
        if (this._ws !== ws) return;
        if (typeof ev.data !== 'string') {
          this._emit('frame', { dir: 'in', binary: ev.data });
          if (!this._tasks.binary(ev.data)) {
            this._emit('error', new DroverError('bad_frame', 'binary frame without a task'));
          }
          return;
        }
        let f;
        try {
          f = parseFrame(ev.data);
        } catch (e) {
          this._emit('frame', { dir: 'in', text: ev.data });
          this._emit('error', e);
          return;
        }
        this._emit('frame', { dir: 'in', text: ev.data, frame: f });
        if (welcomed) {
          this._onFrame(f);
          return;
        }
        switch (f.type) {
          case 'welcome':
            welcomed = true;
            this.session = f.session;
            this.instance = f.instance ?? null;
            if (f.resume) this.resumeToken = f.resume;
            this.position = null;
            this._setState('open');
            this._emit('welcome', f);
            resolve(f);
            return;
          case 'queued':
            this.position = f.position;
            this._setState('queued');
            this._emit('queued', { position: f.position });
            return;
          case 'error':
            // The server closes right after, e.g. no_capacity then 1013.
            openErr = errorFromFrame(f);
            return;
          default:
            this._onFrame(f);
        }
      };

      ws.onclose = (ev) => {
        if (this._ws !== ws) return;
        this._ws = null;
        if (!welcomed) {
          const err = openErr || errorFromClose(ev.code, ev.reason);
          if (err.closeCode === undefined) err.closeCode = ev.code;
          reject(err);
          return;
        }
        this._onDrop(ev.code, ev.reason);
      };
      // A close event always follows an error event; it carries the details.
      ws.onerror = () => {};
    });
  }

  _onFrame(f) {
    switch (f.type) {
      case 'result':
        if (!this._tasks.result(f.id, f.data)) this._stray(f);
        return;
      case 'done':
        if (!this._tasks.done(f.id)) this._stray(f);
        return;
      case 'error': {
        const err = errorFromFrame(f);
        if (!validID(f.id) || !this._tasks.fail(f.id, err)) this._emit('error', err);
        return;
      }
      case 'event':
        this._emit('event', f);
        {
          const name = eventName(f.event);
          if (name) this._emit(name, f);
        }
        if (f.event === 'instance_lost') this._lost(f);
        return;
      case 'queued':
        this.position = f.position;
        this._emit('queued', { position: f.position });
        return;
      default:
        // Unknown types are ignored: a newer server may send more.
    }
  }

  // A frame for a task this client does not know (e.g. one rejected on a
  // drop whose results still trickle in after resume).
  _stray(f) {
    this._emit('error', new DroverError('bad_frame', `${f.type} for unknown task ${f.id}`, { taskId: f.id }));
  }

  // After instance_lost the session is over: its tasks cannot finish.
  _lost(f) {
    const msg = typeof f.message === 'string' ? f.message : 'instance lost';
    this._ended = true;
    this._tasks.failAll(() => new DroverError('instance_lost', msg));
    const err = new DroverError('instance_lost', msg);
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this._finish(1000, msg, err);
  }

  _onDrop(code, reason) {
    this._tasks.failAll(() => new DroverError('disconnected', `connection closed (${code})`, { closeCode: code }));
    if (this._ended || !shouldResume(code) || !this.resumeToken || this._retries <= 0) {
      const err = this._ended || code === 1000 ? null : errorFromClose(code, reason);
      this._finish(code, reason, err);
      return;
    }
    this._resume(code);
  }

  async _resume(code) {
    this._setState('reconnecting');
    let last = errorFromClose(code, '');
    for (let attempt = 1; attempt <= this._retries; attempt++) {
      const delay = backoffDelay(attempt, this.options.backoff);
      this._emit('reconnecting', { attempt, delay, code });
      await new Promise((res) => {
        this._wake = res;
        this._timer = setTimeout(res, delay);
      });
      this._timer = null;
      this._wake = null;
      if (this._ended) return;
      try {
        const welcome = await this._dial(this.resumeToken);
        this._emit('resumed', welcome);
        return;
      } catch (err) {
        last = err;
        if (this._ended) {
          // close() during the attempt: the session is over.
          this._finish(1000, '', null);
          return;
        }
        // Only another drop is worth a retry; an answer (not_found,
        // unauthorized, …) is final.
        if (err.code !== 'disconnected') break;
        this._setState('reconnecting');
      }
    }
    this._finish(last.closeCode ?? code, last.message, last);
  }

  _finish(code, reason, error) {
    if (this.state === 'closed') return;
    this._ended = true;
    if (this._timer) clearTimeout(this._timer);
    if (this._wake) this._wake();
    this._tasks.failAll(() => new DroverError('closed', 'session closed'));
    this._setState('closed');
    this._emit('close', { code, reason, error });
    for (const res of this._closeWaiters.splice(0)) res();
  }

  _send(text, frame) {
    this._ws.send(text);
    this._emit('frame', { dir: 'out', text, frame });
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('statechange', { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
