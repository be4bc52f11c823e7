/**
 * Herald's browser client: an ES module with no dependencies and no build step.
 *
 *   import { subscribe } from "/herald.js";
 *   const sub = subscribe({ topics: ["printers"], token: () => getToken(),
 *                           onEvent(envelope, meta) {}, onGap(gap, envelope) {},
 *                           onState(state) {} });
 *   sub.close();
 *
 * What it guarantees, and how:
 *
 * - One connection per browser.  Tabs of one origin that subscribe as the same
 *   user to the same topics elect a leader with the Web Locks API; only the leader
 *   holds the SSE connection and relays every frame over a BroadcastChannel.  The
 *   lock is released when the leader tab closes, so a queued tab takes over at
 *   once; a frozen or hung leader keeps its lock but stops answering heartbeats,
 *   and a follower steals the lock (`steal: true`) after LEADER_TIMEOUT_MS.  Where
 *   Web Locks or BroadcastChannel are missing (insecure context, old browser)
 *   every tab opens its own connection.
 * - Each tab delivers every envelope once, in order per stream.  A tab remembers,
 *   per stream, the position of the last envelope it delivered (the parts of the
 *   composite SSE `id:` cursor); a frame at or before it is a duplicate — of a
 *   replay overlapping live delivery, or of a new leader resuming from an older
 *   cursor than this tab's — and is dropped.  A new leader resumes from its own
 *   positions, so a hand-over loses nothing.
 * - Reconnects never give up on their own.  The stream is read with fetch(), not
 *   EventSource: EventSource cannot see a status code (so cannot tell a 429 from a
 *   401 or honour Retry-After), cannot send an Authorization header, and stops for
 *   good on any non-200.  429/503 and network errors back off exponentially with
 *   jitter (capped; Retry-After wins when the server sends one), reset after a
 *   healthy period; a 401 gets one fresh token or ticket, then `closed`; a 204 (a
 *   finished message stream) ends the subscription.
 */

const GAP_TYPE = "herald.gap";
const HEARTBEAT_MS = 400; // the leader announces itself this often
const PING_AFTER_MS = 800; // a follower that heard nothing for this long asks
const LEADER_TIMEOUT_MS = 1200; // ... and steals the lock after this (+ jitter)
const STEAL_JITTER_MS = 300; // so two followers rarely steal at the same moment
const WATCH_MS = 200; // how often a follower checks on the leader
const PING_GRACE_MS = 300; // a ping unanswered this long counts as silence
const CURSOR_WAIT_MS = 150; // a new leader without a cursor asks the others this long
const DEFAULT_IDLE_MS = 45000; // no byte (not even a keepalive) for this long: reconnect
const HEALTHY_MS = 10000; // a stream open this long resets the backoff
const SLICE_MS = 50; // deliver for this long, then let timers and messages run

/**
 * @typedef {"connecting" | "open" | "backoff" | "closed"} StateName
 * @typedef {object} State
 * @property {StateName} state
 * @property {boolean} leader  this tab holds the connection (always true when not shared)
 * @property {boolean} shared  tabs share one connection (Web Locks + BroadcastChannel)
 * @property {number} [attempt]  failed attempts since the last healthy connection
 * @property {number} [delayMs]  in "backoff": the wait before the next attempt
 * @property {number} [status]  the HTTP status that caused "backoff" or "closed"
 * @property {string} [error]  the server's error code (or "network"), if any
 * @property {string} [detail]  what the server said about it
 *
 * @typedef {string | null | ((opts: {fresh: boolean}) => (string | null | Promise<string | null>))
 *           | {ticket: string, token?: string | ((opts: {fresh: boolean}) => any)}} TokenOption
 *   A JWT; a function returning one (called per connect, with `fresh: true` after a
 *   401); `{ticket: "/api/events/ticket", token?}` to fetch a single-use ticket per
 *   connect (POST, with the cookie and/or `token`); or nothing: the cookie alone.
 */

// ---- the SSE wire format ------------------------------------------------------------

/**
 * Incremental `text/event-stream` decoder (WHATWG HTML §9.2.6): `push(text)` returns
 * the events completed by that text.  Lines end in CRLF, LF or CR, also across
 * chunk boundaries; `:` lines are comments; a blank line dispatches.
 */
export class SSEDecoder {
  constructor() {
    this.rest = "";
    this.afterCR = false;
    this.started = false;
    this.data = [];
    this.type = "";
    this.id = null; // the id: field of the event being read, if it had one
    this.lastId = ""; // the last event ID, as EventSource keeps it
    this.retry = null; // the last retry: value, in ms
  }

  /** @returns {{id: string | null, lastId: string, type: string, data: string}[]} */
  push(text) {
    if (text === "") return [];
    let buf = this.rest + text;
    // A CR that ended the last chunk ended a line; if this chunk starts with the
    // LF of that CRLF, it ends nothing more.
    if (this.afterCR && buf.charCodeAt(0) === 0x0a) buf = buf.slice(1);
    this.afterCR = false;
    if (!this.started && buf.length > 0) {
      this.started = true;
      if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1);
    }
    const out = [];
    let start = 0;
    const eol = /\r\n|\r|\n/g;
    for (let m = eol.exec(buf); m !== null; m = eol.exec(buf)) {
      this.#line(buf.slice(start, m.index), out);
      start = eol.lastIndex;
    }
    this.afterCR = start === buf.length && start > 0 && buf.charCodeAt(start - 1) === 0x0d;
    this.rest = buf.slice(start);
    return out;
  }

  #line(line, out) {
    if (line === "") {
      if (this.data.length > 0) {
        out.push({ id: this.id, lastId: this.lastId, type: this.type || "message",
                   data: this.data.join("\n") });
      }
      this.data = [];
      this.type = "";
      this.id = null;
      return;
    }
    if (line.charCodeAt(0) === 0x3a) return; // ":" comment, e.g. the keepalive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.id = this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

// ---- positions ------------------------------------------------------------------------

/**
 * A Herald cursor as a Map of stream key ("u", "t:<topic>") to {epoch, id}.  A plain
 * entry id is the user stream's position with no epoch, as the server reads it.
 * @returns {Map<string, {epoch: string, id: string}>}
 */
export function parseCursor(text) {
  const positions = new Map();
  if (!text.includes("~")) {
    positions.set("u", { epoch: "", id: text });
    return positions;
  }
  for (const item of text.split(",")) {
    const [key, epoch, id] = item.split("~");
    if (id === undefined) throw new Error(`malformed cursor item ${JSON.stringify(item)}`);
    positions.set(key, { epoch, id });
  }
  return positions;
}

export function renderCursor(positions) {
  return [...positions].map(([key, p]) => `${key}~${p.epoch}~${p.id}`).join(",");
}

/** Order of two stream entry ids `<ms>-<seq>`: negative, 0 or positive. */
export function compareIds(a, b) {
  const [am, as = "0"] = a.split("-");
  const [bm, bs = "0"] = b.split("-");
  const ms = BigInt(am) - BigInt(bm);
  const d = ms !== 0n ? ms : BigInt(as) - BigInt(bs);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** Whether position `p` comes after `than` (anything does after nothing, and a new
 * epoch is a new history).  An empty epoch is "not known": ids alone decide. */
export function isAfter(p, than) {
  if (!than) return true;
  if (p.epoch && than.epoch && p.epoch !== than.epoch) return true;
  return compareIds(p.id, than.id) > 0;
}

function keyOfStream(name) {
  if (typeof name !== "string") return null;
  if (name.startsWith("user:")) return "u";
  if (name.startsWith("topic:")) return `t:${name.slice(6)}`;
  return null;
}

/**
 * One tab's deliveries of one subscription: the positions it reached per stream,
 * and the rule that drops a frame it has already delivered.
 */
export class Delivery {
  /** @param {{event: Function, gap: Function, subject?: string | null}} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    this.positions = new Map();
  }

  /** The cursor to resume from: every stream's last delivered position, or null. */
  cursor() {
    return this.positions.size > 0 ? renderCursor(this.positions) : null;
  }

  /** Take positions of streams this tab has none for yet (what a leader reports
   * when a tab joins: what came before belongs to before the tab subscribed). */
  adopt(text) {
    if (!text) return;
    for (const [key, p] of parseCursor(text)) {
      if (!this.positions.has(key)) this.positions.set(key, p);
    }
  }

  /** One SSE frame: delivered unless this tab is already past it. */
  accept(id, data) {
    let envelope;
    try {
      envelope = JSON.parse(data);
    } catch (err) {
      console.error("herald: dropped a frame that is not JSON", data, err);
      return;
    }
    if (!id) {
      this.handlers.event(envelope, { stream: null, cursor: null });
      return;
    }
    const at = parseCursor(id);
    if (envelope && envelope.type === GAP_TYPE) {
      const key = keyOfStream(envelope.data && envelope.data.stream);
      const here = key === null ? undefined : at.get(key);
      if (here && !this.#gapIsNews(here, this.positions.get(key), envelope.data)) return;
      this.#advance(at, key);
      this.handlers.gap(envelope, { stream: envelope.data.stream, cursor: id });
      return;
    }
    // The stream this envelope belongs to is the one whose position in the cursor
    // is the envelope's id; another stream may by chance hold the same id, but
    // then its position is one this tab already passed.
    let key = null;
    let named = false;
    for (const [k, p] of at) {
      if (p.id !== envelope.id) continue;
      named = true;
      if (isAfter(p, this.positions.get(k))) {
        key = k;
        break;
      }
    }
    if (key === null && (named || ![...at].some(([k, p]) => isAfter(p, this.positions.get(k))))) {
      return; // already delivered
    }
    this.#advance(at, key);
    this.handlers.event(envelope, { stream: key === null ? null : this.#name(key), cursor: id });
  }

  #gapIsNews(resume, mine, data) {
    if (!mine) return true;
    // "lost" moves to another history: news until this tab is in it too.
    if (data.reason === "lost") return resume.epoch !== mine.epoch;
    return isAfter(resume, mine);
  }

  #advance(at, key) {
    for (const [k, p] of at) {
      if (k === key || isAfter(p, this.positions.get(k))) this.positions.set(k, p);
    }
  }

  #name(key) {
    if (key === "u") return this.handlers.subject ? `user:${this.handlers.subject}` : "user";
    return `topic:${key.slice(2)}`;
  }
}

// ---- retries --------------------------------------------------------------------------

/** Exponential backoff with "equal jitter": the n-th wait is uniform in
 * [c/2, c] where c = min(maxMs, baseMs * 2^n). */
export class Backoff {
  constructor({ baseMs = 1000, maxMs = 30000 } = {}) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.failures = 0;
  }

  next() {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.failures, 30));
    this.failures += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  reset() {
    this.failures = 0;
  }
}

/** Retry-After as milliseconds (seconds or an HTTP date), or null. */
export function retryAfterMs(value) {
  if (value == null || value === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

class HttpError extends Error {
  constructor(status, body, headers) {
    super(`HTTP ${status}${body && body.error ? `: ${body.error}` : ""}`);
    this.status = status;
    this.body = body || {};
    this.headers = headers;
  }
}

async function errorBody(res) {
  try {
    return await res.json();
  } catch {
    return {};
  }
}

// ---- credentials ----------------------------------------------------------------------

function credentialSource(token, credentials) {
  if (token && typeof token === "object") {
    const inner = credentialSource(token.token ?? null, credentials);
    return {
      refreshable: true, // a new ticket is a fresh credential
      async get({ fresh }) {
        const { bearer } = await inner.get({ fresh });
        const res = await fetch(token.ticket, {
          method: "POST",
          credentials,
          cache: "no-store",
          headers: bearer ? { Authorization: `Bearer ${bearer}` } : {},
        });
        if (!res.ok) throw new HttpError(res.status, await errorBody(res), res.headers);
        const body = await res.json();
        return { ticket: body.ticket, bearer: null };
      },
    };
  }
  if (typeof token === "function") {
    return {
      refreshable: true,
      async get({ fresh }) {
        return { bearer: (await token({ fresh })) || null, ticket: null };
      },
    };
  }
  return {
    refreshable: false,
    async get() {
      return { bearer: token || null, ticket: null };
    },
  };
}

function jwtSubject(token) {
  const part = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)),
                                  (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}

async function digest(text) {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(hash).slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Who the credential belongs to, so tabs of different users never share: the
 * JWT's `sub`, else the server's answer to whoami (cookie or ticket auth), else a
 * digest of an opaque token (never the token itself: lock names are listable). */
async function subjectOf(options, source, url) {
  if (options.subject) return String(options.subject);
  const raw = typeof options.token === "object" && options.token ? options.token.token : options.token;
  const token = typeof raw === "function" ? await raw({ fresh: false }) : raw;
  if (token) return jwtSubject(token) ?? `#${await digest(token)}`;
  const { bearer, ticket } = await source.get({ fresh: false });
  const who = new URL("whoami", url);
  if (ticket) who.searchParams.set("ticket", ticket);
  const res = await fetch(who, {
    credentials: options.credentials ?? "same-origin",
    cache: "no-store",
    headers: bearer ? { Authorization: `Bearer ${bearer}` } : {},
  });
  if (!res.ok) throw new HttpError(res.status, await errorBody(res), res.headers);
  return (await res.json()).user;
}

// ---- one connection that reconnects -------------------------------------------------

function classify(status, headers, body) {
  const info = { status, error: body.error, detail: body.detail };
  if (status === 204) return { kind: "finished", ...info };
  if (status === 401) return { kind: "refresh", ...info };
  if (status === 429 || status === 408 || status === 425 || status >= 500) {
    return { kind: "retry", retryAfterMs: retryAfterMs(headers.get("retry-after")), ...info };
  }
  return { kind: "closed", ...info }; // 400, 403, 404 …: retrying cannot help
}

/**
 * One SSE stream read with fetch(), reopened until `stop()` or a final answer.
 * `onFrames(frames)` gets the frames of each network chunk (the next chunk is read
 * once a promise it returns settles); `onState(name, info)`
 * every state change; `onEnd(kind, info)` once, for "closed" or "finished".
 */
class Stream {
  constructor(o) {
    this.o = o;
    this.backoff = new Backoff(o.backoff);
    this.retryMs = null; // the server's retry:, used after a healthy stream ends
    this.stopped = false;
    this.controller = null;
    this.wakeup = null;
  }

  start() {
    this.#run().catch((err) => console.error("herald: stream loop failed", err));
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    if (this.wakeup) this.wakeup();
  }

  /** Cut a backoff wait short (the browser is back online). */
  wake() {
    if (this.wakeup) this.wakeup();
  }

  async #run() {
    let fresh = false;
    let refreshed = false;
    while (!this.stopped) {
      this.o.onState("connecting", { attempt: this.backoff.failures });
      const out = await this.#attempt(fresh);
      fresh = false;
      if (this.stopped) return;
      let delayMs;
      if (out.kind === "ended") {
        refreshed = false;
        if (out.healthy) {
          this.backoff.reset();
          delayMs = (this.retryMs ?? 1000) * (0.5 + Math.random() / 2);
        } else {
          delayMs = this.backoff.next();
        }
      } else if (out.kind === "refresh" && !refreshed && this.o.auth.refreshable) {
        refreshed = fresh = true;
        continue;
      } else if (out.kind === "refresh" || out.kind === "closed" || out.kind === "finished") {
        this.stopped = true;
        const kind = out.kind === "finished" ? "finished" : "closed";
        this.o.onEnd(kind, { status: out.status, error: out.error, detail: out.detail });
        return;
      } else {
        const backoff = this.backoff.next();
        delayMs = out.retryAfterMs == null ? backoff
          : out.retryAfterMs + Math.random() * Math.min(1000, out.retryAfterMs / 10);
      }
      this.o.onState("backoff", { attempt: this.backoff.failures, delayMs: Math.round(delayMs),
                                  status: out.status, error: out.error, detail: out.detail });
      await this.#sleep(delayMs);
    }
  }

  async #attempt(fresh) {
    let cred;
    try {
      cred = await this.o.auth.get({ fresh });
    } catch (err) {
      if (err instanceof HttpError) return classify(err.status, err.headers, err.body);
      return { kind: "retry", error: "network", detail: String(err) };
    }
    if (this.stopped) return { kind: "stopped" };
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream" };
    if (cred.bearer) headers.Authorization = `Bearer ${cred.bearer}`;
    const cursor = this.o.cursor();
    if (cursor) headers["Last-Event-ID"] = cursor;
    let res;
    try {
      res = await fetch(this.o.url(cred.ticket), {
        headers, signal: controller.signal, cache: "no-store", credentials: this.o.credentials,
      });
    } catch (err) {
      return { kind: "retry", error: "network", detail: String(err) };
    }
    if (res.status !== 200) return classify(res.status, res.headers, await errorBody(res));
    if (!(res.headers.get("content-type") || "").startsWith("text/event-stream")) {
      return { kind: "retry", status: 200, error: "not_an_event_stream" };
    }
    this.o.onState("open", { attempt: this.backoff.failures });
    const opened = Date.now();
    try {
      await this.#read(res, controller);
    } catch {
      // dropped: aborted, network error or idle; reconnect below
    }
    return { kind: "ended", healthy: Date.now() - opened >= (this.o.healthyMs ?? HEALTHY_MS) };
  }

  async #read(res, controller) {
    const decoder = new SSEDecoder();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const idleMs = this.o.idleTimeoutMs ?? DEFAULT_IDLE_MS;
    let heard = Date.now();
    const watch = idleMs > 0 ? setInterval(() => {
      if (Date.now() - heard > idleMs) controller.abort();
    }, Math.min(idleMs, 5000)) : 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) return;
        heard = Date.now();
        const frames = decoder.push(value);
        if (decoder.retry !== null) this.retryMs = decoder.retry;
        if (frames.length > 0) await this.o.onFrames(frames);
      }
    } finally {
      clearInterval(watch);
      reader.cancel().catch(() => {});
    }
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const online = () => done();
      function done() {
        clearTimeout(timer);
        removeEventListener("online", online);
        resolve();
      }
      this.wakeup = () => {
        this.wakeup = null;
        done();
      };
      addEventListener("online", online);
    });
  }
}

// ---- subscriptions --------------------------------------------------------------------

function call(fn, ...args) {
  if (typeof fn !== "function") return;
  try {
    fn(...args);
  } catch (err) {
    console.error("herald: a subscriber callback threw", err); // never breaks the stream
  }
}

const yielded = [];
let yieldPort = null;

/** A macrotask boundary that background tabs do not throttle (setTimeout is held
 * to once a second there): queued timers and channel messages run meanwhile. */
function yieldToLoop() {
  if (yieldPort === null) {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => yielded.shift()();
    yieldPort = channel.port2;
  }
  return new Promise((resolve) => {
    yielded.push(resolve);
    yieldPort.postMessage(null);
  });
}

function randomId() {
  return typeof crypto.randomUUID === "function"
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function streamUrl(base, topics) {
  return (ticket) => {
    const url = new URL(base);
    for (const t of topics) url.searchParams.append("topic", t);
    if (ticket) url.searchParams.set("ticket", ticket);
    return url;
  };
}

/** The parts every subscription has: callbacks, state reporting, its delivery. */
class Base {
  constructor(options, url, topics, shared) {
    this.options = options;
    this.url = url;
    this.topics = topics;
    this.shared = shared;
    this.closed = false;
    this.leader = !shared;
    this.state = { state: "connecting", leader: this.leader, shared };
    this.announced = false;
    this.inbox = []; // frames [cursor, data] not yet delivered, in arrival order
    this.draining = false;
    this.drained = Promise.resolve();
    this.delivery = new Delivery({
      subject: null,
      event: (env, meta) => call(options.onEvent, env, meta),
      gap: (env, meta) => options.onGap ? call(options.onGap, env.data, env, meta)
                                        : call(options.onEvent, env, meta),
    });
  }

  report(name, info = {}) {
    if (this.closed && name !== "closed") return;
    const next = { ...info, state: name, leader: this.leader, shared: this.shared };
    const prev = this.state;
    this.state = next;
    const same = prev.state === name && prev.leader === next.leader && prev.attempt === next.attempt;
    if (same && this.announced) return;
    this.announced = true;
    call(this.options.onState, next);
  }

  /** Deliver frames in order, in slices of SLICE_MS: however slow the page's
   * callbacks, the leader keeps beating and answering pings between slices.
   * Resolves once everything queued so far is delivered. */
  deliver(frames) {
    for (const f of frames) this.inbox.push(f);
    if (!this.draining) {
      this.draining = true;
      this.drained = this.drain();
    }
    return this.drained;
  }

  async drain() {
    try {
      let began = performance.now();
      while (this.inbox.length > 0 && !this.closed) {
        const batch = this.inbox;
        this.inbox = [];
        for (const [id, data] of batch) {
          if (this.closed) return;
          this.delivery.accept(id, data);
          if (performance.now() - began > SLICE_MS) {
            await yieldToLoop();
            began = performance.now();
          }
        }
      }
    } finally {
      // Cleared in the same step as the last look at the inbox: a frame queued
      // after it starts a new drain.
      this.draining = false;
      if (this.closed) this.inbox = [];
    }
  }

  stream(source, onFrames, extra) {
    return new Stream({
      url: streamUrl(this.url, this.topics),
      auth: source,
      credentials: this.options.credentials ?? "same-origin",
      backoff: this.options.backoff,
      idleTimeoutMs: this.options.idleTimeoutMs,
      healthyMs: this.options.healthyMs,
      cursor: () => this.delivery.cursor(),
      onFrames,
      ...extra,
    });
  }
}

/** Every tab on its own: where Web Locks or BroadcastChannel are missing. */
class OwnConnection extends Base {
  constructor(options, url, topics) {
    super(options, url, topics, false);
    if (typeof options.token === "string") this.delivery.handlers.subject = jwtSubject(options.token);
    const source = credentialSource(options.token, options.credentials ?? "same-origin");
    this.conn = this.stream(source, (frames) => {
      return this.deliver(frames.filter((f) => f.type === "message").map((f) => [f.id, f.data]));
    }, {
      onState: (name, info) => this.report(name, info),
      onEnd: (_kind, info) => this.end(info),
    }).start();
  }

  end(info) {
    if (this.closed) return;
    this.report("closed", info);
    this.closed = true;
  }

  close() {
    this.conn.stop();
    this.end({});
  }
}

/**
 * Tabs sharing one connection.  Messages on the channel:
 *   frames  {from, frames: [[cursor, data], …]}   the leader relays what it read
 *   beat    {from, state, cursor}                  the leader is alive (and its state)
 *   hello / ping {from}                            a follower asks the leader to beat
 *   cursor? {from} / cursor {to, cursor}           a new leader asks where the others are
 *   closed  {from, info}                           the subscription is over for every tab
 */
class SharedConnection extends Base {
  constructor(options, url, topics) {
    super(options, url, topics, true);
    this.me = randomId();
    this.source = credentialSource(options.token, options.credentials ?? "same-origin");
    this.heard = Date.now();
    this.lastWatch = Date.now();
    this.pingedAt = 0;
    this.heardPeers = false;
    this.ticket = null; // identity of the current lock request
    this.abortWait = null;
    this.reign = null; // {end, conn, beat} while this tab leads
    this.cursorReplies = null;
    this.timers = [];
    this.report("connecting");
    this.start().catch((err) => console.error("herald: could not start", err));
  }

  async start() {
    const backoff = new Backoff(this.options.backoff);
    let subject;
    while (subject === undefined && !this.closed) {
      try {
        subject = await subjectOf(this.options, this.source, this.url);
      } catch (err) {
        if (this.closed) return;
        if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
          this.finish({ status: err.status, error: err.body.error, detail: err.body.detail });
          return;
        }
        const delayMs = backoff.next();
        this.report("backoff", { attempt: backoff.failures, delayMs: Math.round(delayMs),
                                 status: err.status, error: err.body?.error ?? "network" });
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
    if (this.closed) return;
    this.delivery.handlers.subject = subject;
    const name = `herald:${JSON.stringify([this.url.href, subject, this.topics])}`;
    this.lockName = name;
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (m) => this.onMessage(m.data);
    this.post({ t: "hello" });
    this.heard = Date.now();
    this.timers.push(setInterval(() => this.watch(), WATCH_MS));
    this.onFreeze = () => this.freeze();
    this.onResume = () => this.resume();
    document.addEventListener("freeze", this.onFreeze);
    document.addEventListener("resume", this.onResume);
    this.request(false);
  }

  post(message) {
    if (this.channel) this.channel.postMessage({ ...message, from: this.me });
  }

  /** Queue for the lock (or, with `steal`, take it from a leader that stopped beating). */
  request(steal) {
    if (this.closed) return;
    const ticket = {};
    this.ticket = ticket;
    const previous = this.abortWait;
    const controller = steal ? null : new AbortController();
    this.abortWait = controller;
    if (previous) previous.abort();
    const opts = steal ? { steal: true } : { signal: controller.signal };
    navigator.locks
      .request(this.lockName, opts, () => (this.ticket === ticket && !this.closed ? this.lead(ticket) : null))
      .catch(() => {}) // aborted (to steal, or frozen), or stolen from us
      .finally(() => {
        if (this.ticket !== ticket) return; // superseded by a newer request
        this.stepDown();
        if (!this.closed && !this.frozen) this.request(false);
      });
  }

  async lead(ticket) {
    this.abortWait = null;
    this.leader = true;
    this.report("connecting");
    if (!this.delivery.cursor() && this.heardPeers) {
      await this.askCursor();
      if (this.ticket !== ticket || this.closed) return; // lost the lock meanwhile
    }
    let end;
    const done = new Promise((resolve) => { end = resolve; });
    const conn = this.stream(this.source, (frames) => this.relay(frames), {
      onState: (name, info) => {
        this.report(name, info);
        this.beat();
      },
      onEnd: (_kind, info) => {
        this.post({ t: "closed", info });
        this.finish(info);
      },
    });
    this.reign = { end, conn, beat: setInterval(() => this.beat(), HEARTBEAT_MS) };
    this.beat();
    conn.start();
    await done;
  }

  relay(frames) {
    const list = frames.filter((f) => f.type === "message").map((f) => [f.id, f.data]);
    if (list.length === 0) return;
    // Followers first: this tab's own callbacks must not hold up the others.
    this.post({ t: "frames", frames: list });
    return this.deliver(list);
  }

  beat() {
    if (this.reign) this.post({ t: "beat", state: this.state, cursor: this.delivery.cursor() });
  }

  stepDown() {
    const reign = this.reign;
    this.reign = null;
    if (reign) {
      clearInterval(reign.beat);
      reign.conn.stop();
      reign.end();
    }
    if (this.leader) {
      this.leader = false;
      if (!this.closed) this.report("connecting");
    }
    this.heard = Date.now();
  }

  askCursor() {
    return new Promise((resolve) => {
      const timer = setTimeout(finish, CURSOR_WAIT_MS);
      const self = this;
      function finish(cursor) {
        clearTimeout(timer);
        self.cursorReplies = null;
        self.delivery.adopt(cursor);
        resolve();
      }
      this.cursorReplies = finish;
      this.post({ t: "cursor?" });
    });
  }

  onMessage(m) {
    if (this.closed || !m || m.from === this.me) return;
    this.heardPeers = true;
    switch (m.t) {
      case "frames":
        // Also while leading: after a steal the old leader may still be relaying.
        this.deliver(m.frames);
        this.heard = Date.now();
        break;
      case "beat":
        this.heard = Date.now();
        if (!this.reign) {
          this.delivery.adopt(m.cursor);
          this.report(m.state.state, { ...m.state });
        }
        break;
      case "hello":
      case "ping":
        this.beat();
        break;
      case "cursor?":
        if (this.delivery.cursor()) this.post({ t: "cursor", to: m.from, cursor: this.delivery.cursor() });
        break;
      case "cursor":
        if (m.to === this.me && this.cursorReplies) this.cursorReplies(m.cursor);
        break;
      case "closed":
        this.finish(m.info);
        break;
    }
  }

  /** A follower's check: is the leader still there?  It steals only after a ping
   * went unanswered, and never on a tick that came late: a tab that was itself
   * stalled has the leader's beats still queued, unread. */
  watch() {
    const now = Date.now();
    const late = now - this.lastWatch > 3 * WATCH_MS;
    this.lastWatch = now;
    if (this.closed || this.reign || this.frozen) return;
    const silent = now - this.heard;
    if (silent <= PING_AFTER_MS) return;
    const unanswered = this.pingedAt > this.heard && now - this.pingedAt >= PING_GRACE_MS;
    const timeout = (this.options.leaderTimeoutMs ?? LEADER_TIMEOUT_MS) + this.jitter();
    if (!late && unanswered && silent > timeout) {
      this.heard = now;
      this.request(true);
    } else if (!(this.pingedAt > this.heard) || late) {
      this.pingedAt = now;
      this.post({ t: "ping" });
    }
  }

  jitter() {
    this.stealJitter ??= Math.random() * STEAL_JITTER_MS;
    return this.stealJitter;
  }

  /** The page is being frozen (Page Lifecycle API): hand leadership on and leave
   * the queue, so a frozen tab is never the one granted the lock. */
  freeze() {
    this.frozen = true;
    this.ticket = null;
    if (this.abortWait) this.abortWait.abort();
    this.abortWait = null;
    this.stepDown();
  }

  resume() {
    if (!this.frozen) return; // still leading or queued: nothing was given up
    this.frozen = false;
    this.heard = Date.now();
    this.request(false);
  }

  finish(info) {
    if (this.closed) return;
    this.report("closed", info);
    this.close();
  }

  close() {
    this.closed = true;
    this.ticket = null;
    if (this.abortWait) this.abortWait.abort();
    this.stepDown();
    for (const t of this.timers) clearInterval(t);
    if (this.onFreeze) {
      document.removeEventListener("freeze", this.onFreeze);
      document.removeEventListener("resume", this.onResume);
    }
    if (this.channel) this.channel.close();
    if (this.state.state !== "closed") {
      this.state = { state: "closed", leader: false, shared: true };
      call(this.options.onState, this.state);
    }
  }
}

/** Whether tabs can share a connection here (secure context, modern browser). */
export function canShare() {
  return typeof navigator !== "undefined" && !!navigator.locks
    && typeof navigator.locks.request === "function" && typeof BroadcastChannel === "function"
    && typeof document !== "undefined";
}

/**
 * Subscribe to the caller's user stream and `topics`; returns `{close()}` (plus the
 * read-only `state` and `leader`).
 *
 * Options: `url` ("/api/events"), `topics` ([]), `token` (see TokenOption),
 * `onEvent(envelope, {stream, cursor})`, `onGap(gapData, envelope, meta)` (without
 * it gaps go to onEvent, so none is ever swallowed), `onState(State)`,
 * `credentials` ("same-origin"), `share` (true: one connection per browser),
 * `subject` (who the token belongs to, if it is not a JWT), `backoff`
 * ({baseMs: 1000, maxMs: 30000}), `idleTimeoutMs` (45000: reconnect when not even a
 * keepalive arrived), `healthyMs` (10000), `leaderTimeoutMs` (1200).
 */
export function subscribe(options = {}) {
  const url = new URL(options.url ?? "/api/events", location.href);
  const topics = [...new Set((options.topics ?? []).map(String))].sort();
  const sub = options.share !== false && canShare()
    ? new SharedConnection(options, url, topics)
    : new OwnConnection(options, url, topics);
  return {
    close: () => sub.close(),
    get state() { return sub.state; },
    get leader() { return sub.leader; },
  };
}

/**
 * Read one chat message stream (`GET /api/messages/<id>/events`) from the start (or
 * after sequence number `after`) to its end: `onEvent(envelope, {seq})` for each
 * event once, in order; `onEnd(envelope | null)` once, with the terminal envelope
 * (`message.end` / `message.error`), or null when the server says it already ended
 * (204).  One connection per call (a message is read by the tab that shows it).
 * Other options as for `subscribe` (`token`, `onState`, `credentials`, `backoff`…).
 */
export function subscribeMessage(messageId, options = {}) {
  const base = new URL(options.url ?? `/api/messages/${encodeURIComponent(messageId)}/events`,
                       location.href);
  let last = options.after ?? -1;
  let ended = false;
  const state = { current: { state: "connecting", leader: true, shared: false } };
  const report = (name, info = {}) => {
    state.current = { ...info, state: name, leader: true, shared: false };
    call(options.onState, state.current);
  };
  const end = (envelope) => {
    if (ended) return;
    ended = true;
    conn.stop();
    report("closed", { ended: true });
    call(options.onEnd, envelope);
  };
  const conn = new Stream({
    url: streamUrl(base, []),
    auth: credentialSource(options.token, options.credentials ?? "same-origin"),
    credentials: options.credentials ?? "same-origin",
    backoff: options.backoff,
    idleTimeoutMs: options.idleTimeoutMs,
    healthyMs: options.healthyMs,
    cursor: () => (last >= 0 ? String(last) : null),
    onFrames(frames) {
      for (const f of frames) {
        if (ended || f.type !== "message") continue;
        let envelope;
        try {
          envelope = JSON.parse(f.data);
        } catch (err) {
          console.error("herald: dropped a frame that is not JSON", f.data, err);
          continue;
        }
        // Frames carry their sequence number; the watchdog's synthetic error has none.
        if (f.id !== null) {
          const seq = Number(f.id);
          if (seq <= last) continue;
          last = seq;
        }
        call(options.onEvent, envelope, { seq: f.id === null ? null : last });
        if (envelope.type === "message.end" || envelope.type === "message.error") end(envelope);
      }
    },
    onState: report,
    onEnd(kind, info) {
      if (kind === "finished") end(null);
      else report("closed", info);
    },
  }).start();
  return {
    close() {
      conn.stop();
      ended = true;
      report("closed");
    },
    get state() { return state.current; },
  };
}
