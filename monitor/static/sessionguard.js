// sessionguard browser SDK — a plain ES module, no dependencies, no build step.
//
//   import { connect } from "https://sidecar.example/sdk/sessionguard.js";
//   const guard = await connect({ url: "wss://sidecar.example/v1/ws", token,
//                                 onStatus, onConsent, onNotice });
//   guard.attachMedia(stream);                 // a copy of camera/mic to the sidecar (WebRTC)
//   await guard.requestRecording("reason");    // resolves {id, approved}
//   guard.close();
//
// Tokens expire. Pass getToken (async, returns a fresh token for the same session from the
// platform's backend) and the SDK asks for one whenever its token has expired (the sidecar
// closed the channel with "token_expired", a reconnect failed past the token's exp, or three
// handshakes in a row failed: a token already expired when the page got it looks fresh) and
// reconnects with it; unsent signals are kept meanwhile. Without getToken the SDK reports
// onStatus({state: "expired"}) and waits for guard.setToken(fresh).
//
// Import this module before any other script of the page: the capture-API wrappers are
// installed at import time, so later scripts calling getDisplayMedia, MediaRecorder or
// captureStream are seen. The wrappers behave exactly like the originals (same return,
// same throw). Calls seen before the page's first connect() are queued (bounded) and sent
// to that first session if its consent allows it; calls seen while no guard observes (a
// session without the "device" scope, after close()) are dropped, never sent later.
//
// Privacy: only what the token's consent.monitoring allows is observed. Every client.*
// signal belongs to the "device" scope (the heartbeat, which carries nothing, is always sent); audio/video tracks are sent only for the "audio" /
// "video" scopes. Device ids are never sent raw: SHA-256(session id + ":" + deviceId).
// Key listeners report only screenshot combinations, never other keys.
//
// Delivery: every signal carries a seq; unacknowledged signals are kept (at most
// MAX_UNACKED, oldest dropped first and counted) and resent after a reconnect, which backs
// off exponentially with jitter. Dropped signals are reported in a heartbeat as
// {"signal":"client.heartbeat","data":{"dropped":N}}, kept (like any signal) until it is
// acknowledged; offline, at most one heartbeat waits in the queue. A signal whose JSON is
// over MAX_SIGNAL_BYTES (UTF-8) could never be delivered (the sidecar closes the socket on
// a frame over its limit, every time it is resent): it is never queued, it is counted as
// dropped and onStatus({error: "signal_too_large", message}) says so (name and size only).
// Frames are paced to stay within the sidecar's documented per-connection allowance (see
// PACE_BURST), so a long queue resent after an outage is not refused.
//
// connect() throws (rejects) on a url the WebSocket API cannot use, never retries it.
//
// The SDK never throws into the host page: every handler and callback is wrapped.

const HEARTBEAT_MS = 5000;
const MAX_UNACKED = 1000;
const MAX_EARLY = 100;
const BATCH = 50;
const BATCH_CHARS = 16000;          // a resend frame: at most this much JSON (even at 3 bytes a
                                    // character well under the sidecar's 64 KiB frame limit)
const MAX_SIGNAL_BYTES = 60000;     // one signal's JSON, UTF-8: over it, dropped (a frame carrying
                                    // it alone still fits the sidecar's default 65,536 bytes)
// The sidecar's default allowance per connection is a token bucket of 100 tokens refilled at
// 50 a second; a frame costs 1, and a "signals" batch 0.1 more per item. The SDK spends from
// its own bucket of half that size, refilled at 4/5 of that rate: frames bunched on their way
// (a busy network or sidecar) still fit, and a 1,000-signal resend takes about 2 s.
const PACE_BURST = 50;
const PACE_RATE = 40;               // tokens a second
const RESEND_WAIT_MS = 2000;        // after a "rate_limited" error
const REFUSALS_BEFORE_RENEW = 3;    // handshakes failed in a row before getToken is asked
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const FIRST_OPEN_WAIT_MS = 5000;
const ANSWER_WAIT_MS = 15000;       // a connected socket silent this long after a heartbeat ...
const OPEN_WAIT_MS = 15000;         // ... or a handshake unanswered this long: given up
const ICE_WAIT_MS = 5000;
const CONSENT_WAIT_MS = 5000;       // a new socket sends once its consent message came, or after this
const MEDIA_RETRY_MS = 5000;        // a media connection down this long is offered anew ...
const MEDIA_RETRY_MAX_MS = 60000;   // ... doubling after each try that did not connect
const TARGET_W = 320;
const TARGET_H = 240;
const MAX_FPS = 5;          // the rate the sidecar analyses pictures at (its video cheap_fps)
const MAX_DEVICES = 64;

const SCREENSHOT_KEYS = { Digit3: "Meta+Shift+3", Digit4: "Meta+Shift+4",
  Digit5: "Meta+Shift+5", KeyS: "Meta+Shift+S" };

const POLICY_TEXT = {
  prohibited: "recording is not permitted",
  patient_allowed: "you may record this session",
  provider_records: "the provider records this session",
};
const SCOPE_TEXT = { device: "device and window activity", audio: "audio", video: "video" };

// ---------------------------------------------------------------- shared state

const guards = new Set();   // observing guards; capture hits go to each
const early = [];           // capture hits before the page's first connect() (only)
let connectedOnce = false;  // after the first connect(), a hit no guard observes is dropped

function quiet(fn) {
  // Wrap a handler so nothing it does can throw into the page.
  return function (...args) {
    try {
      const r = fn.apply(this, args);
      if (r && typeof r.catch === "function") r.catch(() => {});
      return r;
    } catch (_e) {
      return undefined;
    }
  };
}

function call(cb, ...args) {
  if (typeof cb !== "function") return undefined;
  try { return cb(...args); } catch (_e) { return undefined; }
}

function hit(signal, data) {
  try {
    const item = { signal, at: Date.now(), data };
    if (guards.size === 0 && !connectedOnce) {
      if (early.length >= MAX_EARLY) early.shift();
      early.push(item);
    }
    for (const g of guards) g._capture(item);
  } catch (_e) { /* never into the page */ }
}

function keepShape(wrapper, original) {
  try {
    Object.defineProperty(wrapper, "name", { value: original.name, configurable: true });
    Object.defineProperty(wrapper, "length", { value: original.length, configurable: true });
  } catch (_e) { /* cosmetic only */ }
  return wrapper;
}

// ---------------------------------------------------------------- capture wrappers

function wrapMethod(proto, name, describe) {
  if (!proto) return;
  const original = proto[name];
  if (typeof original !== "function") return;
  const wrapper = keepShape(function (...args) {
    hit(describe.signal, describe.data(this, args));
    return original.apply(this, args);   // same return, same throw
  }, original);
  try {
    Object.defineProperty(proto, name, { value: wrapper, writable: true, configurable: true,
      enumerable: Object.getOwnPropertyDescriptor(proto, name)?.enumerable ?? false });
  } catch (_e) { /* a frozen prototype: nothing to wrap */ }
}

function trackCounts(stream) {
  try {
    return { audio: stream.getAudioTracks().length, video: stream.getVideoTracks().length };
  } catch (_e) {
    return {};
  }
}

function installWrappers() {
  if (typeof window === "undefined" || window.__sessionguardWrapped) return;
  try {
    Object.defineProperty(window, "__sessionguardWrapped", { value: true });
  } catch (_e) { return; }

  wrapMethod(window.MediaDevices?.prototype, "getDisplayMedia", {
    signal: "client.display_capture",
    data: () => ({ api: "getDisplayMedia" }),
  });
  wrapMethod(window.HTMLCanvasElement?.prototype, "captureStream", {
    signal: "client.capture_stream",
    data: () => ({ element: "canvas" }),
  });
  wrapMethod(window.HTMLMediaElement?.prototype, "captureStream", {
    signal: "client.capture_stream",
    data: (el) => ({ element: el instanceof window.HTMLVideoElement ? "video" : "audio" }),
  });

  const Original = window.MediaRecorder;
  if (typeof Original === "function") {
    // A Proxy keeps prototype, instanceof, static isTypeSupported, name and subclassing.
    const Wrapped = new Proxy(Original, {
      construct(target, args, newTarget) {
        let data = {};
        try {
          data = { tracks: trackCounts(args[0]) };
          if (args[1] && typeof args[1].mimeType === "string") {
            data.mimeType = args[1].mimeType.slice(0, 64);
          }
        } catch (_e) { /* keep data small */ }
        hit("client.media_recorder", data);
        return Reflect.construct(target, args, newTarget);
      },
    });
    try {
      Object.defineProperty(window, "MediaRecorder", { value: Wrapped, writable: true,
        configurable: true, enumerable: false });
    } catch (_e) { /* leave the original */ }
  }
}

installWrappers();

// ---------------------------------------------------------------- helpers

function decodeConsent(token) {
  try {
    const payload = decodePart(String(token).split(".")[1]);
    const c = payload.consent || {};
    return { sid: String(payload.sid || ""),
      exp: typeof payload.exp === "number" ? payload.exp * 1000 : null,
      iat: typeof payload.iat === "number" ? payload.iat * 1000 : null,
      consent: { monitoring: Array.isArray(c.monitoring) ? c.monitoring : [],
        recording: c.recording || "prohibited" } };
  } catch (_e) {
    return { sid: "", exp: null, iat: null,
      consent: { monitoring: [], recording: "prohibited" } };
  }
}

// Why a token cannot open a patient channel, or null. Only the shape and the role are
// checked (the signature is the sidecar's business): a Promise passed without await, a
// string that is no JWT, a clinician's token would otherwise be retried forever in silence.
function tokenProblem(token) {
  if (typeof token !== "string") {
    const what = token && typeof token.then === "function" ? "a Promise (missing await?)"
      : typeof token;
    return "the token must be a JWT string, not " + what;
  }
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) {
    return "the token is not a JWT (three base64url parts)";
  }
  const payload = decodePart(parts[1]);
  if (!payload || typeof payload !== "object") return "the token's claims are not JSON";
  if (payload.role !== "patient") {
    return "the SDK needs a patient's token, not one with role " +
      JSON.stringify(typeof payload.role === "string" ? payload.role.slice(0, 20) : null);
  }
  return null;
}

// Why the WebSocket API cannot use this url, or null: the checks its constructor makes (a
// parsable URL, relative ones resolved against the page; scheme ws:, wss:, http: or https:,
// the last two meaning ws: and wss:; no fragment). Retrying such a url can never work.
function urlProblem(url) {
  let parsed;
  try {
    const base = typeof document !== "undefined" ? document.baseURI : undefined;
    parsed = new URL(String(url), base);
  } catch (_e) {
    return "sessionguard.connect: url is not a valid URL";
  }
  if (!["ws:", "wss:", "http:", "https:"].includes(parsed.protocol)) {
    return "sessionguard.connect: url must be a ws:, wss:, http: or https: URL, not " +
      JSON.stringify(parsed.protocol.slice(0, 20));
  }
  if (parsed.hash || String(url).includes("#")) {
    return "sessionguard.connect: url must have no #fragment (the token is added as a query)";
  }
  return null;
}

let encoder = null;

// The UTF-8 length of a signal's JSON if it is over MAX_SIGNAL_BYTES, else 0. A UTF-16 code
// unit is at most 3 bytes: only a long text is encoded to be measured.
function oversize(text) {
  if (text.length * 3 <= MAX_SIGNAL_BYTES) return 0;
  encoder ??= new TextEncoder();
  const bytes = encoder.encode(text).length;
  return bytes > MAX_SIGNAL_BYTES ? bytes : 0;
}

function decodePart(part) {
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
  } catch (_e) {
    return null;
  }
}

function randomHex(n) {
  const bytes = new Uint8Array(Math.ceil(n / 2));
  try { globalThis.crypto.getRandomValues(bytes); } catch (_e) {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, n);
}

async function hashId(salt, id) {
  if (!id) return "";
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return "";   // never the raw id
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(salt + ":" + id));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Elements whose children are not rendered (see _raiseNotice).
const NO_CHILDREN = new Set(["video", "audio", "canvas", "img", "iframe", "object", "embed",
  "picture", "input", "textarea", "select"]);

// Shows el in the top layer (a manual popover: no light dismiss, no Escape), above every
// layer of the page shown before it; where the browser has no popover, a fixed element.
function topLayer(el) {
  if (typeof el.showPopover !== "function") return;
  try {
    el.popover = "manual";
    if (el.matches(":popover-open")) el.hidePopover();
    el.showPopover();   // the last shown is the topmost
  } catch (_e) {
    el.removeAttribute("popover");   // an ordinary fixed element then (never a hidden one)
  }
}

export function noticeText(consent) {
  const scopes = (consent?.monitoring || []).map((s) => SCOPE_TEXT[s] || String(s));
  const what = scopes.length ? scopes.join(", ") : "nothing";
  const policy = POLICY_TEXT[consent?.recording] || String(consent?.recording || "unknown");
  return `This session uses sessionguard: ${what} ${scopes.length > 1 ? "are" : "is"} ` +
    `monitored to detect recording. Recording policy: ${policy}.`;
}

// ---------------------------------------------------------------- the guard

class Guard {
  constructor(opts) {
    this._url = String(opts.url);
    this._cb = opts;
    const decoded = decodeConsent(String(opts.token));
    this._salt = decoded.sid;
    this._consent = decoded.consent;
    this._stale = false;              // the token is known to be dead: renew before reconnecting
    this._useToken(opts.token);
    this._renewing = false;
    this._waitingForToken = false;
    this._seq = Date.now() * 1000;   // above any earlier page's numbers after a reload
    this._unacked = new Map();        // seq -> message, in send order
    this._dropped = 0;                // signals discarded and not yet in a heartbeat
    this._beats = new Set();          // seqs of heartbeats waiting for their ack
    this._sent = 0;                   // signals up to this seq went out on the current socket
    this._tokens = PACE_BURST;        // the current socket's pacing bucket (see PACE_BURST)
    this._tokensAt = 0;
    this._flushTimer = null;          // sending waits: for tokens, or after "rate_limited"
    this._awaitConsent = false;       // a new socket sends nothing before its consent message
    this._urlError = null;            // the browser refused to open a socket to the url
    this._ws = null;
    this._closed = false;
    this._attempt = 0;
    this._timers = new Set();
    this._observing = false;
    this._off = [];
    this._devices = null;             // last device snapshot: Map key -> device
    this._devicesLabelled = false;
    this._hiddenAt = null;
    this._blurAt = null;
    this._pc = null;
    this._stream = null;
    this._mediaTries = 0;             // offers since the media connection was last connected
    this._mediaCheck = null;          // the peer connection a retry is pending for
    this._mediaYielded = false;       // another connection of this participant took the media
    this._requests = [];              // resolvers of requestRecording, oldest first
    this._requestReason = "";         // ... the reason last given
    this._requestId = null;           // ... the waiting request's id (ours, or the sidecar's)
    this._noticeEl = null;
    this._noticeOff = null;           // removes the notice's own listeners
    this._hostWatch = null;           // watches a fullscreen element holding the notice
    this._firstOpen = null;
    this._refused = 0;                // handshakes in a row that never opened
    this._unanswered = null;          // when a heartbeat went out unanswered on this socket
    this._abandon = () => {};         // give the current socket up (see _open)
    // hits seen before the page's first connect(): this session's, if it may observe them
    this._early = connectedOnce ? [] : early.splice(0);
    connectedOnce = true;
  }

  // ---- public API

  attachMedia(stream) {
    this._stream = stream || null;
    this._mediaYielded = false;
    // a stream means camera/mic permission: device labels are readable now (Chromium fires
    // no devicechange for that), whether or not the consent lets any track be sent
    if (stream && this._observing && !this._devicesLabelled) this._scanDevices().catch(() => {});
    return this._offer().catch((e) => this._status({ media: "failed", error: String(e) }));
  }

  requestRecording(reason) {
    if (this._closed) return Promise.resolve({ id: null, approved: false, error: "closed" });
    return new Promise((resolve) => {
      // the request is named here, so that it can be asked about after a reconnect even if
      // the sidecar's "ok" was lost with the connection
      if (this._requests.length === 0) this._requestId = "rr-" + randomHex(12);
      this._requests.push(resolve);
      this._requestReason = String(reason ?? "").slice(0, 500);
      this._askRecording();   // now if connected, else once the socket opens
    });
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    guards.delete(this);
    this._stopObserving();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    try { this._pc?.close(); } catch (_e) { /* already closed */ }
    this._pc = null;
    try { this._ws?.close(1000, "closed by page"); } catch (_e) { /* ignore */ }
    this._removeNotice();
    for (const r of this._requests.splice(0)) r({ id: null, approved: false, error: "closed" });
    this._status({ state: "closed" });
  }

  // A fresh token for the same session (after "expired" was reported, or ahead of expiry).
  setToken(token) {
    if (this._closed || !token) return;
    this._useToken(token);
    if (this._waitingForToken) {
      this._waitingForToken = false;
      this._attempt = 0;
      this._open();
    }
  }

  get consent() { return { ...this._consent }; }
  get pending() { return this._unacked.size; }

  // ---- connection

  _useToken(token) {
    this._problem = tokenProblem(token);
    token = String(token);
    const { exp, iat, sid } = decodeConsent(token);
    if (!this._salt && !this._problem) this._salt = sid;  // the first token was unusable
    this._token = token;
    this._stale = false;
    this._expiresAt = exp;
    // The page's clock may be hours off: judge expiry on the token's own clock, taking the
    // token as minted about when the page received it (an older token is judged late, never
    // early; the sidecar's "token_expired" is the authority anyway).
    this._clockSkew = iat === null ? 0 : Date.now() - iat;
  }

  // Only asked after a handshake failed: the browser cannot see the 401, so a token past its
  // exp is the likely reason.
  _looksExpired() {
    return this._expiresAt !== null && Date.now() - this._clockSkew >= this._expiresAt;
  }

  // The token expired: ask the page for a fresh one (options.getToken), or wait for
  // setToken(). The sidecar refuses an expired token, so reconnecting with it is pointless.
  _renew() {
    if (typeof this._cb.getToken !== "function") {
      this._waitingForToken = true;
      this._status({ state: "expired", error: "token_expired" });
      this._firstOpen?.();
      return;
    }
    if (this._renewing) return;
    this._renewing = true;
    let pending;
    try {
      pending = Promise.resolve(this._cb.getToken());
    } catch (e) {
      pending = Promise.reject(e);
    }
    pending.then((token) => {
      this._renewing = false;
      if (this._closed) return;
      if (!token) throw new Error("getToken returned no token");
      this._useToken(token);
      this._open();
    }).catch(quiet((e) => {
      this._renewing = false;
      if (this._closed) return;
      this._status({ state: "expired", error: "token_renewal_failed: " + String(e) });
      this._retry();  // ask again after a backoff
    }));
  }

  _open() {
    if (this._closed) return;
    if (this._problem) {
      // the sidecar would refuse it at every handshake: say so and wait for setToken()
      this._waitingForToken = true;
      this._status({ state: "expired", error: "invalid_token", message: this._problem });
      this._firstOpen?.();
      return;
    }
    if (this._stale) { this._renew(); return; }
    const sep = this._url.includes("?") ? "&" : "?";
    let ws;
    try {
      ws = new WebSocket(this._url + sep + "token=" + encodeURIComponent(this._token));
    } catch (e) {
      // the browser refuses this url outright (connect() checked its syntax; an insecure ws:
      // from an https page, say): the same url can never work, so it is not retried. The
      // browser's message may quote the url, token included: only its name is passed on.
      this._urlError = new TypeError("sessionguard: the browser refused to open a WebSocket " +
        "to this url (" + String(e?.name || "Error") + ")");
      this._status({ state: "disconnected", error: "invalid_url",
        message: this._urlError.message });
      this._firstOpen?.();
      return;
    }
    this._ws = ws;
    this._unanswered = null;
    this._status({ state: "connecting" });
    let opened = false;
    const gone = quiet((code, reason) => {
      if (this._ws !== ws) return;
      this._ws = null;
      if (this._closed) { this._firstOpen?.(); return; }
      if (!opened) {
        // Refused (or unreachable): renew first if the token looks expired, or, with
        // getToken, after REFUSALS_BEFORE_RENEW handshakes in a row (the token may have
        // expired before the page got it, and its own clock cannot tell).
        this._refused += 1;
        if (this._looksExpired() || (typeof this._cb.getToken === "function"
            && this._refused >= REFUSALS_BEFORE_RENEW)) {
          this._stale = true;
          this._refused = 0;
        }
      }
      this._status({ state: "disconnected", code, reason });
      if (this._stale) { this._open(); return; }  // renews (or reports "expired") at once
      this._firstOpen?.();
      this._retry();
    });
    // A socket can stop carrying data without closing (a NAT mapping or a proxy gone quiet):
    // the browser would wait minutes. Give it up ourselves and reconnect.
    this._abandon = (reason) => {
      ws.onclose = null;
      try { ws.close(4000, reason); } catch (_e) { /* already closing */ }
      gone(4000, reason);
    };
    ws.onopen = quiet(() => {
      opened = true;
      this._refused = 0;   // the backoff is reset by the first ack, not here: a socket closed at
                       // once (a frame refused, a proxy) must not make reconnects a loop
      this._status({ state: "connected" });
      // Nothing queued goes before this connection's consent message: a consent narrowed
      // while the page was offline must not see the signals it no longer covers leave.
      this._awaitConsent = true;
      this._later(CONSENT_WAIT_MS, () => { if (this._ws === ws) this._consentArrived(); });
      this._askRecording();
      if (this._stream && !this._mediaYielded) this._offer().catch(() => {});
      this._firstOpen?.();
    });
    ws.onmessage = quiet((ev) => { this._unanswered = null; this._receive(ev.data); });
    ws.onclose = quiet((ev) => gone(ev.code, ev.reason));
    ws.onerror = quiet(() => {});
    this._later(OPEN_WAIT_MS, () => {
      if (this._ws === ws && ws.readyState === 0) this._abandon("no handshake answer");
    });
  }

  // Called with every heartbeat: the sidecar acknowledges each one at once, so a connected
  // socket that has heard nothing for ANSWER_WAIT_MS since a heartbeat went out is dead.
  _checkAnswered() {
    if (this._ws?.readyState !== 1) return;
    const now = Date.now();
    if (this._unanswered === null) this._unanswered = now;
    else if (now - this._unanswered >= ANSWER_WAIT_MS) this._abandon("no answer from the sidecar");
  }

  _retry() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 16);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this._later(delay, () => this._open());
  }

  _later(ms, fn) {
    const t = setTimeout(quiet(() => { this._timers.delete(t); fn(); }), ms);
    this._timers.add(t);
    return t;
  }

  // Every frame costs the sidecar's bucket a token (a batch more, see _flush).
  _raw(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(message));
    this._tokens -= 1;
    return true;
  }

  // The pacing bucket's tokens now.
  _refill() {
    const now = performance.now();
    this._tokens = Math.min(PACE_BURST,
      this._tokens + Math.max(0, now - this._tokensAt) * PACE_RATE / 1000);
    this._tokensAt = now;
    return this._tokens;
  }

  // A request still waiting is asked again after every reconnect, with its id: one decided while the page was disconnected is answered with its decision (the
  // clinicians are not asked again); one still waiting stays the same request.
  _askRecording() {
    if (this._requests.length === 0) return;
    const message = { type: "recording.request", reason: this._requestReason };
    if (this._requestId) message.id = this._requestId;
    this._raw(message);
  }

  _cancelFlush() {
    if (this._flushTimer === null) return;
    clearTimeout(this._flushTimer);
    this._timers.delete(this._flushTimer);
    this._flushTimer = null;
  }

  // The connection's consent message came (or did not within CONSENT_WAIT_MS): what is
  // still queued goes.
  _consentArrived() {
    if (!this._awaitConsent) return;
    this._awaitConsent = false;
    this._resend();
  }

  // A new socket: everything unacknowledged goes again, from a full bucket.
  _resend() {
    this._cancelFlush();
    this._sent = 0;
    this._tokens = PACE_BURST;
    this._tokensAt = performance.now();
    this._flush();
  }

  // The sidecar refused a frame ("slow down and resend"; its bucket is empty): nothing goes
  // for a while, then everything still unacknowledged goes again.
  _resendLater() {
    this._cancelFlush();
    this._refill();
    this._tokens = 0;
    this._flushTimer = this._later(RESEND_WAIT_MS, () => {
      this._flushTimer = null;
      this._sent = 0;
      this._flush();
    });
  }

  // Send the queued signals not sent on this socket yet, oldest first, as fast as the
  // pacing bucket allows: one alone as a "signal", more (after a reconnect, or once sending
  // waited) as "signals" batches of at most BATCH items and BATCH_CHARS characters (unless
  // one item alone is larger). Later signals wait behind them, so the order is kept.
  _flush() {
    if (this._flushTimer !== null || this._awaitConsent || this._ws?.readyState !== 1) return;
    for (;;) {
      const items = this._nextFrame();
      if (items.length === 0) return;
      const cost = items.length > 1 ? 1 + items.length / 10 : 1;
      const short = cost - this._refill();
      if (short > 0) {
        this._flushTimer = this._later(short * 1000 / PACE_RATE, () => {
          this._flushTimer = null;
          this._flush();
        });
        return;
      }
      this._tokens -= cost - 1;   // _raw spends the frame's own token
      this._raw(items.length > 1 ? { type: "signals", items } : items[0]);
      this._sent = items[items.length - 1].seq;
    }
  }

  _nextFrame() {
    const items = [];
    let size = 0;
    for (const item of this._unacked.values()) {   // in seq order
      if (item.seq <= this._sent) continue;
      const n = JSON.stringify(item).length + 1;
      if (items.length && (items.length >= BATCH || size + n > BATCH_CHARS)) break;
      items.push(item);
      size += n;
    }
    return items;
  }

  _signal(signal, data, at) {
    if (this._closed) return undefined;
    const msg = { type: "signal", seq: this._seq + 1, signal, at: at ?? Date.now(), data };
    const bytes = oversize(JSON.stringify(msg));
    if (bytes) {
      // the sidecar would close the socket on it at every try, and the queue behind it
      // would wait forever: dropped, counted, said (never its content)
      this._dropped += 1;
      this._status({ error: "signal_too_large", message: `a ${signal} signal of ${bytes} ` +
        `bytes is over the SDK's limit of ${MAX_SIGNAL_BYTES} bytes for one signal: dropped` });
      return undefined;
    }
    this._seq = msg.seq;
    this._unacked.set(msg.seq, msg);
    while (this._unacked.size > MAX_UNACKED) {
      const oldest = this._unacked.keys().next().value;
      const gone = this._unacked.get(oldest);
      this._unacked.delete(oldest);
      // an evicted heartbeat gives its count back to the next one; a signal is counted
      if (this._beats.delete(oldest)) this._dropped += gone.data.dropped || 0;
      else this._dropped += 1;
    }
    this._flush();
    return msg.seq;
  }

  // Drops are counted once: each heartbeat carries the drops no earlier heartbeat carries,
  // and stays queued (resent after a reconnect) until acknowledged. Offline, one heartbeat
  // every 5 s would push real signals out of the queue: a new one replaces those waiting
  // and takes over their counts.
  _heartbeat() {
    if (this._ws?.readyState !== 1) {
      for (const seq of this._beats) {
        this._dropped += this._unacked.get(seq)?.data.dropped || 0;
        this._unacked.delete(seq);
      }
      this._beats.clear();
    }
    const data = this._dropped > 0 ? { dropped: this._dropped } : {};
    this._dropped = 0;
    this._beats.add(this._signal("client.heartbeat", data));
  }

  _acked(seq) {
    this._unacked.delete(seq);
    this._beats.delete(seq);
  }

  _receive(text) {
    let m;
    try { m = JSON.parse(text); } catch (_e) { return; }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "ack":
        this._attempt = 0;   // this connection works
        if (Array.isArray(m.seqs)) for (const s of m.seqs) this._acked(s);
        else this._acked(m.seq);
        break;
      case "consent":
        this._setConsent({ monitoring: Array.isArray(m.monitoring) ? m.monitoring : [],
          recording: m.recording || "prohibited" });
        this._consentArrived();
        break;
      case "webrtc.answer":
        this._pc?.setRemoteDescription({ type: "answer", sdp: m.sdp })
          .catch((e) => this._status({ media: "failed", error: String(e) }));
        break;
      case "recording.decision": {
        // a participant has one request waiting at a time (asking again meanwhile is the
        // same request): the decision answers every requestRecording still waiting
        const waiting = this._requests.splice(0);
        this._requestId = null;
        const decision = { id: m.id ?? null, approved: !!m.approved };
        for (const resolve of waiting) resolve(decision);
        call(this._cb.onRecordingDecision, decision);
        break;
      }
      case "ok":
        if (m.ref === "recording.request" && typeof m.id === "string" && this._requests.length) {
          this._requestId = m.id;
        }
        break;
      case "error":
        if (m.code === "token_expired") this._stale = true;  // the close follows; renew then
        if (m.code === "media_replaced") this._mediaYielded = true;  // until attachMedia again
        if (m.code === "media_busy") this._offerLater(m.retry_after_s);
        if (m.code === "rate_limited") this._resendLater();
        this._status({ error: { code: m.code, message: m.message } });
        break;
      default:
        break;
    }
  }

  _status(change) {
    const state = this._closed ? "closed" : this._ws?.readyState === 1 ? "connected"
      : change.state || "disconnected";
    call(this._cb.onStatus, { state, pending: this._unacked.size, ...change });
  }

  // ---- consent and notice

  _setConsent(consent) {
    const before = this._mediaKinds();
    this._consent = consent;
    this._showNotice(consent);
    call(this._cb.onConsent, { ...consent });
    if (consent.monitoring.includes("device")) this._startObserving();
    else {
      this._stopObserving();
      // queued signals it no longer covers never leave the page: every signal the SDK
      // observes is in the device scope (the heartbeat carries nothing about the patient)
      for (const [seq, msg] of this._unacked) {
        if (msg.signal !== "client.heartbeat") this._unacked.delete(seq);
      }
    }
    // media the consent no longer covers stops leaving the device at once: a new offer
    // without it (the sidecar already stopped analysing it)
    if (this._pc && this._stream && !this._mediaYielded && this._mediaKinds() !== before) {
      this._offer().catch((e) => this._status({ media: "failed", error: String(e) }));
    }
  }

  // the kinds of the attached stream the consent covers, e.g. "audio,video"
  _mediaKinds() {
    const scopes = this._consent.monitoring;
    const kinds = new Set((this._stream?.getTracks() || []).map((t) => t.kind));
    return ["audio", "video"].filter((k) => kinds.has(k) && scopes.includes(k)).join(",");
  }

  // The default notice is in the top layer (a manual popover) where the browser has one:
  // above every layer of the page, a fullscreen video or a chat widget at the highest
  // z-index included, and unclipped by any ancestor's overflow. It is English, marked so
  // (lang, dir) for screen readers and right-to-left pages, and its text is rewritten only
  // when it changes: a consent message repeated after a reconnect is not announced again.
  // onNotice may return the text to show instead (a translation): it is then the page's
  // language and direction.
  _showNotice(consent) {
    const own = call(this._cb.onNotice, { ...consent });
    if (own === true) {
      this._removeNotice();
      return;
    }
    // a string: the page's own words (a translation), shown in the SDK's notice, in the
    // page's language and direction
    const words = typeof own === "string" && own.trim() ? own.trim().slice(0, 1000) : null;
    if (typeof document === "undefined" || !document.body) return;
    let el = this._noticeEl;
    if (!el) {
      el = document.createElement("div");
      el.className = "sessionguard-notice";
      el.setAttribute("role", "status");
      el.setAttribute("aria-live", "polite");
      el.style.cssText = "position:fixed;left:8px;bottom:8px;top:auto;right:auto;margin:0;" +
        "border:0;max-width:28em;z-index:2147483647;" +
        "padding:6px 10px;font:13px/1.4 system-ui,sans-serif;color:#fff;background:#234;" +
        "border-radius:6px;opacity:.92;pointer-events:none";  // never in the way of a click
      this._noticeEl = el;
      // a page element made fullscreen enters the top layer above the notice: raise it again
      const raise = quiet(() => this._raiseNotice());
      document.addEventListener("fullscreenchange", raise);
      // a page that hides every popover (a route change, a menu library) hid it: shown again
      const reshow = quiet(() => {
        if (el.isConnected && el.hasAttribute("popover") && !el.matches(":popover-open")) {
          topLayer(el);
        }
      });
      el.addEventListener("toggle", reshow);
      this._noticeOff = () => {
        document.removeEventListener("fullscreenchange", raise);
        el.removeEventListener("toggle", reshow);
      };
    }
    if (!el.isConnected) this._raiseNotice();   // in the page before its text: announced
    const text = words ?? noticeText(consent);
    if (words) { el.removeAttribute("lang"); el.removeAttribute("dir"); }
    else { el.lang = "en"; el.dir = "ltr"; }
    if (el.textContent !== text) el.textContent = text;
  }

  // In a fullscreen element of the page the notice is a child of it: the browser shows
  // nothing outside that element but the top layer, and hides everything outside it from
  // screen readers. One that cannot hold a child (a <video>) leaves it in the body, shown in
  // the top layer above it.
  _raiseNotice() {
    this._hostWatch?.disconnect();
    this._hostWatch = null;
    const el = this._noticeEl;
    if (!el || this._closed || !document.body) return;
    const fs = document.fullscreenElement;
    const host = fs instanceof HTMLElement && !fs.shadowRoot && !NO_CHILDREN.has(fs.localName)
      ? fs : document.body;
    if (el.parentNode !== host) host.appendChild(el);
    topLayer(el);
    if (host !== document.body && el.getClientRects().length === 0) {
      document.body.appendChild(el);   // not rendered there after all
      topLayer(el);
    } else if (host !== document.body && typeof MutationObserver === "function") {
      // The page may rebuild its fullscreen element's children (a participant joined): the
      // notice goes to the body then, still shown in the top layer (once: never a tug of war
      // with a page that keeps its element's children to itself).
      const watch = new MutationObserver(quiet(() => {
        if (el.parentNode === host) return;
        watch.disconnect();
        if (this._noticeEl === el && !this._closed && !el.isConnected && document.body) {
          document.body.appendChild(el);
          topLayer(el);
        }
      }));
      watch.observe(host, { childList: true });
      this._hostWatch = watch;
    }
  }

  _removeNotice() {
    this._hostWatch?.disconnect();
    this._hostWatch = null;
    this._noticeOff?.();
    this._noticeOff = null;
    this._noticeEl?.remove();
    this._noticeEl = null;
  }

  // ---- observers (device scope only)

  _on(target, type, fn, opts) {
    if (!target?.addEventListener) return;
    const h = quiet(fn);
    target.addEventListener(type, h, opts);
    this._off.push(() => target.removeEventListener(type, h, opts));
  }

  _startObserving() {
    if (this._observing || this._closed) return;
    this._observing = true;
    for (const item of this._early.splice(0)) this._signal(item.signal, item.data, item.at);
    guards.add(this);
    const doc = typeof document !== "undefined" ? document : null;

    this._on(doc, "visibilitychange", () => {
      const hidden = doc.visibilityState === "hidden";
      const data = { state: hidden ? "hidden" : "visible" };
      if (hidden) this._hiddenAt = Date.now();
      else if (this._hiddenAt !== null) {
        data.away_ms = Date.now() - this._hiddenAt;
        this._hiddenAt = null;
      }
      this._signal("client.visibility", data);
    });
    this._on(window, "blur", () => {
      this._blurAt = Date.now();
      this._signal("client.focus", { focused: false });
    });
    this._on(window, "focus", () => {
      const data = { focused: true };
      if (this._blurAt !== null) data.away_ms = Date.now() - this._blurAt;
      this._blurAt = null;
      this._signal("client.focus", data);
    });
    if (doc?.visibilityState === "hidden") {
      this._hiddenAt = Date.now();
      this._signal("client.visibility", { state: "hidden" });
    }

    // PrintScreen: on Windows the browser is sent only its keyup (the system takes the
    // keydown, and Windows 11 opens the Snipping Tool on it); elsewhere both. One press is
    // one signal: the keyup counts only when its keydown was not seen. A held key (or
    // combination) repeats its keydown: only the first counts.
    let printDown = false;
    const isPrint = (e) => e.key === "PrintScreen" || e.code === "PrintScreen";
    this._on(window, "keydown", (e) => {
      if (e.repeat) return;
      let combo = null;
      if (isPrint(e)) {
        printDown = true;
        combo = "PrintScreen";
      } else if (e.metaKey && e.shiftKey) combo = SCREENSHOT_KEYS[e.code] || null;
      if (combo) this._signal("client.key", { combo });
    }, { capture: true, passive: true });
    this._on(window, "keyup", (e) => {
      if (!isPrint(e)) return;
      if (!printDown) this._signal("client.key", { combo: "PrintScreen" });
      printDown = false;
    }, { capture: true, passive: true });

    const scr = globalThis.screen;
    if (scr && typeof scr.isExtended === "boolean") {
      let extended = scr.isExtended;
      this._signal("client.screens", { extended, change: "initial" });
      this._on(scr, "change", () => {
        if (scr.isExtended !== extended) {
          extended = scr.isExtended;
          this._signal("client.screens", { extended });
        }
      });
    }
    this._on(doc, "fullscreenchange", () => {
      this._signal("client.fullscreen", { active: !!doc.fullscreenElement });
    });
    this._on(doc, "enterpictureinpicture", () => this._signal("client.pip", { active: true }),
      true);
    this._on(doc, "leavepictureinpicture", () => this._signal("client.pip", { active: false }),
      true);

    const md = navigator.mediaDevices;
    if (md?.enumerateDevices) {
      this._on(md, "devicechange", () => this._scanDevices());
      this._scanDevices();
    }

  }

  _stopObserving() {
    if (!this._observing) return;
    this._observing = false;
    guards.delete(this);
    for (const off of this._off.splice(0)) { try { off(); } catch (_e) { /* ignore */ } }
  }

  _capture(item) {
    if (this._observing) this._signal(item.signal, item.data, item.at);
  }

  async _scanDevices() {
    const list = await navigator.mediaDevices.enumerateDevices();
    const now = new Map();
    let labelled = false;
    for (const d of list.slice(0, MAX_DEVICES)) {
      if (!["audioinput", "audiooutput", "videoinput"].includes(d.kind)) continue;
      const label = String(d.label || "").slice(0, 256);
      labelled ||= label !== "";
      const id = await hashId(this._salt, d.deviceId);
      now.set(d.kind + "|" + id + "|" + label, { kind: d.kind, label, id });
    }
    if (!this._observing) return;
    const before = this._devices;
    this._devices = now;
    if (before === null || (labelled && !this._devicesLabelled)) {
      this._devicesLabelled = labelled;
      this._signal("client.devices", { change: "initial", devices: [...now.values()] });
      return;
    }
    const added = [...now.keys()].filter((k) => !before.has(k)).map((k) => now.get(k));
    const removed = [...before.keys()].filter((k) => !now.has(k)).map((k) => before.get(k));
    if (added.length) this._signal("client.devices", { change: "added", devices: added });
    if (removed.length) this._signal("client.devices", { change: "removed", devices: removed });
  }

  // ---- media

  async _offer() {
    const stream = this._stream;
    if (!stream || this._closed || !this._ws || this._ws.readyState !== 1) return;
    try { this._pc?.close(); } catch (_e) { /* ignore */ }
    const scopes = this._consent.monitoring;
    // one track of each consented kind (the sidecar refuses a second camera or microphone)
    const tracks = stream.getTracks().filter((t, i, all) => scopes.includes(t.kind)
      && all.findIndex((u) => u.kind === t.kind) === i);
    if (tracks.length === 0) { this._pc = null; return; }
    const pc = new RTCPeerConnection({ iceServers: [] });
    this._pc = pc;
    pc.onconnectionstatechange = quiet(() => {
      this._status({ media: pc.connectionState });
      this._watchMedia(pc);
    });
    for (const track of tracks) {
      const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      if (track.kind === "video") await this._scaleVideo(tr.sender, track);
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") { resolve(); return; }
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ICE_WAIT_MS);
    });
    if (this._pc !== pc) return;
    this._raw({ type: "webrtc.offer", sdp: pc.localDescription.sdp });
    // Camera/mic permission is granted by now: device labels become readable.
    if (this._observing && !this._devicesLabelled) this._scanDevices().catch(() => {});
  }

  // The sidecar analyses as many calls' media as it is set to: this call's offer waits
  // (its clinician is told) and is made again after the delay the sidecar gave.
  _offerLater(seconds) {
    const wait = Math.min(3600, Math.max(1, Number(seconds) || 60)) * 1000;
    const pc = this._pc;
    if (this._busyWait === pc) return;
    this._busyWait = pc;
    this._later(wait, () => {
      if (this._busyWait === pc) this._busyWait = null;
      if (this._closed || this._pc !== pc || !this._stream || this._mediaYielded) return;
      this._offer().catch((e) => this._status({ media: "failed", error: String(e) }));
    });
  }

  // A media connection that failed, or stayed disconnected for a while (the network went,
  // the sidecar restarted), is offered anew on a fresh peer connection, with backoff; the
  // sidecar gives that offer a fresh receiver. While it is down the clinician sees the media
  // stopped.
  _watchMedia(pc) {
    const state = pc.connectionState;
    if (state === "connected") { this._mediaTries = 0; return; }
    if ((state !== "failed" && state !== "disconnected") || this._mediaCheck === pc) return;
    this._mediaCheck = pc;
    const wait = Math.min(MEDIA_RETRY_MAX_MS, MEDIA_RETRY_MS * 2 ** this._mediaTries);
    this._later(wait, () => {
      if (this._mediaCheck === pc) this._mediaCheck = null;
      const down = pc.connectionState === "failed" || pc.connectionState === "disconnected";
      if (this._closed || this._pc !== pc || !this._stream || !down || this._mediaYielded) return;
      this._mediaTries += 1;
      this._offer().catch((e) => this._status({ media: "failed", error: String(e) }));
    });
  }

  async _scaleVideo(sender, track) {
    try {
      const s = track.getSettings ? track.getSettings() : {};
      const scale = Math.max(1, (s.width || TARGET_W) / TARGET_W, (s.height || TARGET_H) / TARGET_H);
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
      for (const enc of params.encodings) {
        enc.scaleResolutionDownBy = scale;
        enc.maxFramerate = MAX_FPS;
      }
      await sender.setParameters(params);
    } catch (_e) { /* the sidecar downscales anyway */ }
  }

  _start() {
    // Scopes from the token until the sidecar's consent message. The notice says so from
    // the start: observing begins now, and what is observed is queued while the sidecar is
    // out of reach (its first consent message corrects the notice, should it differ).
    this._showNotice(this._consent);
    if (this._consent.monitoring.includes("device")) this._startObserving();
    this._early = [];   // not consented: never sent, to this session or a later one
    this._open();
    // The heartbeat carries nothing about the patient ({} or a dropped count) and runs
    // whatever the consent: without it the sidecar would report the SDK as silent.
    const beat = () => {
      this._checkAnswered();
      this._heartbeat();
      this._later(HEARTBEAT_MS, beat);
    };
    beat();
  }
}

// ---------------------------------------------------------------- entry point

export async function connect(options) {
  const opts = options || {};
  if (!opts.url || !opts.token) throw new TypeError("sessionguard.connect needs {url, token}");
  const problem = urlProblem(opts.url);
  if (problem) throw new TypeError(problem);
  const guard = new Guard(opts);
  const opened = new Promise((resolve) => { guard._firstOpen = resolve; });
  guard._start();
  if (guard._urlError) {
    guard.close();
    throw guard._urlError;
  }
  await Promise.race([opened, new Promise((r) => setTimeout(r, FIRST_OPEN_WAIT_MS))]);
  guard._firstOpen = null;
  return guard;
}

export default { connect, noticeText };
