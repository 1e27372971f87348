// sessionguard in-call panel: a custom element <sessionguard-panel token="..." url="ws://...">.
// Plain ES module, no dependencies, no build step. It shows what monitoring can see (or that it
// is blind), lists live alerts by severity and time, and sends the clinician's actions
// (alert.ack, alert.feedback, recording.decision, consent.set). On reconnect it sends
// {"type":"resume","after":LAST_ALERT_SEQ} so no alert is missed.

const SEVERITIES = ["info", "notice", "warning", "critical"];
const POLICIES = {
  prohibited: "Recording not allowed",
  patient_allowed: "Patient may record",
  provider_records: "Clinician records",
};
const SCOPES = { device: "device & browser", audio: "microphone", video: "camera" };
const SDK_WORDS = { connected: "connected", silent: "not responding", disconnected: "not connected" };
const MEDIA_WORDS = { flowing: "analysed", stopped: "stopped", none: "not shared" };
// A camera or microphone row for a limit the sidecar reported, under the media state it
// comes with (sessions.LIMIT_WORDS has the full sentences): stopped ones say why, flowing
// ones what is missed. Any of them is a gap in what monitoring sees.
const LIMIT_ROWS = {
  stopped: {
    oversized: "not analysed (sent larger than the sidecar accepts)",
    failed: "not analysed (the sidecar's analysis of it keeps failing: see its log)",
    absent: "not arriving (offered, but nothing came: a blocked connection, or the app sends none)",
    busy: "not analysed for now (the sidecar analyses as many calls as it is set to; offered again shortly)",
  },
  flowing: {
    muted: "sends only silence (muted?): sounds near the patient are not heard",
    overloaded: "analysed only in part (the sidecar is overloaded: alerts may come late or be missed)",
    lossy: "analysed with gaps (a connection losing packets: sounds in the gaps are missed)",
    narrowband: "analysed (narrowband: shutter sounds cannot be heard)",
  },
};
// A patient's app that had to drop signals (its queue filled while it was offline) says how
// many in a heartbeat: the status's participants[].lost, a gap in the record (not blindness now).
function gapWords(participant, lost, many) {
  const who = many ? `Patient ${participant}'s app` : "The patient's app";
  return `${who} could not deliver ${lost} ${lost === 1 ? "signal" : "signals"} while it was offline `
    + "(its queue for them was full): the record of this session has a gap there, and a sign of "
    + "recording among them may have been missed.";
}

/** Signals each patient's app reported lost, by participant, from a status message. */
function lostBy(status) {
  const lost = new Map();
  for (const p of (status && status.participants) || []) {
    if (typeof p.lost === "number" && p.lost > 0) lost.set(p.participant, p.lost);
  }
  return lost;
}

const VERDICT_WORDS = { confirmed: "Confirmed", false_positive: "Marked false alarm" };
const PLAIN = {
  "client.display_capture": "A screen or tab capture was started inside the call page",
  "client.media_recorder": "A recorder was created inside the call page",
  "client.heartbeat": "The patient's app checked in",
  "os.screenshot": "The patient's device reported a screenshot",
  "audio.shutter": "A camera-shutter or screenshot sound was heard",
  "audio.virtual_source": "The microphone has no natural background noise (virtual or loopback source)",
  "video.extra_person": "The face detector found two or more faces",
  "video.no_person": "The face detector found no face in the picture",
  "video.obscured": "The camera was covered, black or uniform",
  "video.frozen": "The video showed the same frame",
  "video.loop": "Earlier video was replayed",
  "video.synthetic_source": "The video has no camera sensor noise (virtual camera or screen content)",
};

/** One piece of evidence in plain words (mirrors monitor/report.py describe_evidence). */
export function describeEvidence(signal, data) {
  data = data || {};
  switch (signal) {
    case "client.visibility":
      return data.state === "hidden" ? "The patient switched away from the call tab"
        : "The patient came back to the call tab";
    case "client.focus":
      return data.focused ? "The call window regained focus" : "The call window lost focus";
    case "client.devices": {
      const labels = (data.devices || []).map((d) => d.label || d.kind || "unnamed").join(", ");
      const verb = { added: "A device was connected", removed: "A device was disconnected" }[data.change]
        || "Devices present";
      return labels ? `${verb}: ${labels}` : verb;
    }
    case "client.virtual_device":
      return data.label ? `A virtual or loopback device is in use: ${data.label}`
        : "A virtual or loopback device is in use";
    case "client.capture_stream":
      return `A copy of a ${data.element || "media"} element's stream was taken in the page`;
    case "client.key":
      return `The screenshot keys ${data.combo || ""} were pressed`;
    case "client.screens":
      return data.extended ? "A second screen is connected" : "Only one screen is connected";
    case "client.fullscreen":
      return `Full screen was turned ${data.active ? "on" : "off"}`;
    case "client.pip":
      return `Picture-in-picture was turned ${data.active ? "on" : "off"}`;
    case "os.screen_capture":
      return data.active ? "The patient's device reported screen recording started"
        : "The patient's device reported screen recording stopped";
    default:
      return PLAIN[signal] || signal || "unknown signal";
  }
}

function clock(at) {
  if (typeof at !== "number") return "";
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function ensureStyles() {
  if (document.querySelector("link[data-sessionguard-panel]")) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("panel.css", import.meta.url).href;
  link.dataset.sessionguardPanel = "";
  document.head.append(link);
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/ws`;
}

/** "session participant" of a token (its unverified claims), or null when it is not a JWT. */
function sessionOf(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    return typeof claims.sid === "string" ? `${claims.sid} ${claims.sub}` : null;
  } catch {
    return null;
  }
}

export class SessionguardPanel extends HTMLElement {
  static get observedAttributes() { return ["token", "url"]; }

  constructor() {
    super();
    this.alerts = new Map();     // id -> {alert, acked, ackedBy, verdict, stateAt, pending}
    this.states = new Map();     // id -> alert.state received before its alert (applied on arrival)
    this.requests = new Map();   // id -> request
    this.skips = new Map();      // rule -> skip (rules not run: no consent for their scope)
    this.alertLimit = null;      // the skip saying the session's alert limit was reached
    this.status = null;
    this.lastSeq = 0;
    this.ws = null;
    this.retry = 0;
    this.closed = false;
    this.link = "connecting";    // connecting | open | lost | refused
    this.resuming = false;       // between sending resume and its "ok": alerts are replayed
    this.replayQuiet = true;     // the first resume of a panel replays history: not announced
    this.held = [];              // ids of alerts a reconnect's resume brought, to announce after it
    this.fresh = [];             // ids of new alerts gathered for one announcement
    this.order = [];             // the alert entries in the order shown
    this.nodes = new Map();      // id -> its <li>
  }

  connectedCallback() {
    ensureStyles();
    this.classList.add("sg-panel");
    if (!this.built) this.build();
    this.closed = false;
    this.open();
  }

  disconnectedCallback() {
    this.closed = true;
    if (this.ws) this.ws.close(1000, "panel removed");
    clearTimeout(this.timer);
  }

  attributeChangedCallback(name, before, after) {
    if (!this.built || before === after || !this.isConnected) return;
    // A token of another session (or clinician) is a new panel: nothing of the old session
    // stays shown, and its alerts are asked for from the start. A fresh token of the same
    // session (a refresh before it expires) keeps what is shown.
    if (name === "token" && (sessionOf(before) === null || sessionOf(before) !== sessionOf(after))) {
      this.reset();
    }
    const old = this.ws;
    this.ws = null;  // its close event is then ignored
    if (old) old.close(1000, "reconfigured");
    clearTimeout(this.timer);
    this.retry = 0;
    this.open();
  }

  reset() {
    this.alerts.clear();
    this.states.clear();
    this.requests.clear();
    this.skips.clear();
    this.alertLimit = null;
    this.status = null;
    this.lastSeq = 0;
    this.held = [];
    this.fresh = [];
    this.politeRegion.textContent = "";
    this.assertiveRegion.textContent = "";
    this.renderRequests();
    this.renderAlerts();
    this.renderStatus();
  }

  build() {
    this.built = true;
    this.stateText = el("span", { class: "sg-state-text", text: "Connecting to sessionguard…" });
    this.stateBox = el("div", { class: "sg-state", "data-state": "connecting" },
      el("span", { class: "sg-dot", "aria-hidden": "true" }), this.stateText);
    this.reasons = el("ul", { class: "sg-reasons" });
    this.gaps = el("ul", { class: "sg-gaps", "aria-label": "Gaps in the record" });
    this.skipNote = el("p", { class: "sg-skips" });
    this.details = el("dl", { class: "sg-details" });
    this.policySelect = el("select", { id: "sg-policy", class: "sg-policy-select" },
      Object.entries(POLICIES).map(([value, label]) => el("option", { value, text: label })));
    this.policyButton = el("button", { type: "button", class: "sg-btn", text: "Change policy",
      onclick: () => this.send({ type: "consent.set", recording: this.policySelect.value }) });
    this.requestList = el("div", { class: "sg-requests" });
    this.alertList = el("ol", { class: "sg-alerts", "aria-label": "Alerts, most important first" });
    this.empty = el("p", { class: "sg-empty", text: "No alerts. Alerts are advisory: a sign to talk about, never proof." });
    this.politeRegion = el("div", { class: "sg-sr", role: "status", "aria-live": "polite", "aria-atomic": "true" });
    this.assertiveRegion = el("div", { class: "sg-sr", role: "alert", "aria-live": "assertive", "aria-atomic": "true" });
    this.replaceChildren(
      el("header", { class: "sg-head" },
        el("h2", { class: "sg-title", text: "Session monitoring" }), this.stateBox),
      el("section", { class: "sg-section", "aria-label": "What monitoring can see" },
        this.reasons, this.gaps, this.details, this.skipNote,
        el("div", { class: "sg-policy" },
          el("label", { for: "sg-policy", text: "Recording policy" }), this.policySelect, this.policyButton)),
      this.requestList,
      el("section", { class: "sg-section", "aria-label": "Alerts" },
        el("h3", { class: "sg-subtitle", text: "Alerts" }), this.empty, this.alertList),
      this.politeRegion, this.assertiveRegion);
    this.renderStatus();
  }

  // --- connection -------------------------------------------------------------------------

  open() {
    const token = this.getAttribute("token");
    if (!token) {
      this.setLink("refused", "No clinician token: monitoring is not connected.");
      return;
    }
    const url = this.getAttribute("url") || defaultUrl();
    let ws;
    try {
      // The token travels as a subprotocol, so it stays out of URLs and access logs.
      ws = new WebSocket(url, ["sessionguard.v1", `sessionguard.token.${token}`]);
    } catch (err) {
      this.setLink("refused", `Cannot reach sessionguard (${err.message}).`);
      return;
    }
    this.ws = ws;
    this.setLink("connecting", this.retry ? "Reconnecting to sessionguard…" : "Connecting to sessionguard…");
    ws.addEventListener("open", () => {
      this.retry = 0;
      // The sidecar sends the requests still waiting when a panel connects: one that it does
      // not send again before its resume is done was answered meanwhile (or is gone). A
      // decision sent on the old connection may have been lost with it: ask again.
      for (const request of this.requests.values()) {
        if (request.decided === null && !request.gone) request.unconfirmed = true;
        delete request.pending;
      }
      this.renderRequests();
      // Likewise an ack or verdict in flight: its buttons work again, and the resume's
      // alert.state shows what the sidecar did receive.
      const pending = [...this.alerts.values()].filter((e) => e.pending.ack || e.pending.verdict);
      for (const entry of pending) entry.pending = {};
      for (const entry of pending) this.updateAlert(entry);
      // What the old connection said no longer holds (the sidecar may have restarted): never
      // "on" until this connection's status says so.
      this.status = null;
      this.setLink("open");
      // Alerts the resume replays are history on a panel's first connection (a reload, a new
      // panel); on a reconnect they are new to this clinician unless already acknowledged,
      // which the alert.state after them says: announced once the resume is done.
      this.replayQuiet = this.alerts.size === 0 && this.lastSeq === 0;
      this.resuming = true;
      ws.send(JSON.stringify({ type: "resume", after: this.lastSeq }));
    });
    ws.addEventListener("message", (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      if (msg && typeof msg.type === "string") this.handle(msg);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (event.code === 1008 || event.code === 4401 || event.code === 4403) {
        this.setLink("refused", `sessionguard refused this panel (${event.reason || "token not accepted"}).`);
        return;
      }
      this.setLink("lost", "Connection to sessionguard lost: monitoring status unknown. Reconnecting…");
      const delay = Math.min(10000, 500 * 2 ** this.retry++);
      this.timer = setTimeout(() => { if (!this.closed) this.open(); }, delay);
    });
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.announce("Not connected to sessionguard: the action was not sent.", false);
      return false;
    }
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  setLink(link, text) {
    this.link = link;
    this.linkText = text || "";
    this.renderStatus();
  }

  // --- messages ---------------------------------------------------------------------------

  handle(msg) {
    switch (msg.type) {
      case "alert": this.onAlert(msg); break;
      case "status":
        this.announceGaps(this.status, msg);
        this.status = msg;
        this.renderStatus();
        if (this.requests.size) this.renderRequests();  // a second patient: boxes say who asks
        break;
      case "consent":
        this.status = { ...(this.status || {}), consent: { monitoring: msg.monitoring, recording: msg.recording } };
        this.renderStatus();
        break;
      case "recording.request": this.onRequest(msg); break;
      case "skip":
        if (msg.reason === "alert_limit") { this.alertLimit = msg; this.renderStatus(); }
        else if (msg.rule) { this.skips.set(msg.rule, msg); this.renderStatus(); }
        break;
      case "recording.decision": {
        const request = this.requests.get(msg.id);
        if (request) {
          request.decided = Boolean(msg.approve ?? msg.approved);
          request.unconfirmed = false;
          request.gone = false;
          delete request.pending;
          this.renderRequests();
        }
        break;
      }
      case "ok": this.onOk(msg); break;
      case "alert.acked": case "alert.ack": this.markAck(msg.id); break;
      case "alert.feedback": this.markVerdict(msg.id, msg.verdict); break;
      case "alert.state": this.onState(msg); break;
      case "error": {
        if (msg.code === "unknown_request") {
          // A decision on a request the sidecar no longer waits on: another clinician
          // answered it (this panel missed it) or it is gone. Never shown as decided here.
          // The error names the request in its "id" (without one, every decision in flight
          // is in doubt).
          const doubtful = typeof msg.id === "string"
            ? [this.requests.get(msg.id)].filter((r) => r && r.decided === null)
            : [...this.requests.values()].filter((r) => r.pending !== undefined);
          for (const request of doubtful) {
            delete request.pending;
            request.gone = true;
          }
          this.renderRequests();
          this.announce("That recording request no longer waits for an answer: another clinician "
            + "answered it, or the sidecar no longer holds it.", false);
          break;
        }
        // An action was refused: undo the "in progress" state so the buttons work again, and
        // say what happened.
        for (const entry of this.alerts.values()) {
          if (entry.pending.ack || entry.pending.verdict) { entry.pending = {}; this.updateAlert(entry); }
        }
        this.announce(`sessionguard: ${msg.message || msg.code}`, false);
        break;
      }
      default: break;
    }
    this.dispatchEvent(new CustomEvent("sessionguard-message", { detail: msg }));
  }

  onAlert(alert) {
    if (typeof alert.seq === "number") this.lastSeq = Math.max(this.lastSeq, alert.seq);
    if (this.alerts.has(alert.id)) return;
    this.alerts.set(alert.id, { alert, acked: Boolean(alert.acknowledged), ackedBy: [],
      verdict: alert.verdict || null, stateAt: 0, pending: {} });
    const early = this.states.get(alert.id);
    this.states.delete(alert.id);
    if (early) this.applyState(this.alerts.get(alert.id), early);
    this.updateAlert(this.alerts.get(alert.id));
    if (alert.muted === true) return;  // a repeat of a false alarm: shown, never announced
    if (!this.resuming) this.gather(alert.id);
    else if (!this.replayQuiet) this.held.push(alert.id);
  }

  // New alerts are announced together: one arriving alone with its message, a burst as one
  // summary led by the most severe. Acknowledged ones (by anyone) are not announced.
  gather(id) {
    this.fresh.push(id);
    if (!this.gatherTimer) this.gatherTimer = setTimeout(() => this.announceAlerts(), 300);
  }

  announceAlerts() {
    this.gatherTimer = null;
    const entries = this.fresh.map((id) => this.alerts.get(id)).filter((e) => e && !e.acked);
    this.fresh = [];
    if (!entries.length) return;
    const rank = (e) => SEVERITIES.indexOf(e.alert.severity);
    const top = entries.reduce((best, e) => (rank(e) > rank(best) ? e : best)).alert;
    const words = entries.length === 1
      ? `${top.severity} alert: ${top.title || top.rule}. ${top.message || ""}`
      : `${entries.length} new alerts, the most severe: ${top.severity} alert: ${top.title || top.rule}.`;
    this.announce(words.trim(), entries.some((e) => e.alert.severity === "critical"));
  }

  // What the clinicians of the session did with an alert (any of them, this one included): sent
  // after every ack / feedback and again on resume. Applying it twice changes nothing, an older
  // state never undoes a newer one, and it is not announced (the alert itself was).
  onState(msg) {
    if (typeof msg.id !== "string") return;
    const entry = this.alerts.get(msg.id);
    if (!entry) {
      const held = this.states.get(msg.id);
      if (!held || (msg.at || 0) >= (held.at || 0)) this.states.set(msg.id, msg);
      return;
    }
    if (this.applyState(entry, msg)) this.updateAlert(entry);
  }

  applyState(entry, msg) {
    const at = typeof msg.at === "number" ? msg.at : 0;
    const by = Array.isArray(msg.acknowledged_by) ? msg.acknowledged_by.map(String) : [];
    const before = JSON.stringify([entry.acked, entry.ackedBy, entry.verdict, entry.pending]);
    if (by.length) {
      entry.acked = true;
      for (const who of by) if (!entry.ackedBy.includes(who)) entry.ackedBy.push(who);
      delete entry.pending.ack;
    }
    if (at >= entry.stateAt) {
      entry.stateAt = at;
      if (msg.feedback === "confirmed" || msg.feedback === "false_positive") {
        entry.verdict = msg.feedback;
        delete entry.pending.verdict;
      }
    }
    return JSON.stringify([entry.acked, entry.ackedBy, entry.verdict, entry.pending]) !== before;
  }

  onRequest(request) {
    const known = this.requests.get(request.id);
    if (known) { known.unconfirmed = false; return; }
    this.requests.set(request.id, { ...request, decided: null });
    this.renderRequests();
    const who = request.participant && ((this.status && this.status.participants) || []).length > 1
      ? `Patient ${request.participant}` : "The patient";
    this.announce(`${who} asks to record the session${request.reason ? `: ${request.reason}` : ""}.`, false);
  }

  onOk(msg) {
    const entry = this.alerts.get(msg.id);
    if (msg.ref === "alert.ack" && entry) this.markAck(msg.id);
    else if (msg.ref === "alert.feedback" && entry) this.markVerdict(msg.id, entry.pending.verdict || msg.verdict);
    else if (msg.ref === "recording.decision") {
      const request = this.requests.get(msg.id);
      if (request && request.pending !== undefined) {
        request.decided = request.pending;
        delete request.pending;
        this.renderRequests();
      }
    } else if (msg.ref === "resume") {
      this.resuming = false;
      for (const id of this.held) this.gather(id);
      this.held = [];
      let changed = false;
      for (const request of this.requests.values()) {
        if (request.unconfirmed && request.decided === null) { request.gone = true; changed = true; }
        request.unconfirmed = false;
      }
      if (changed) this.renderRequests();
    }
  }

  markAck(id) {
    const entry = this.alerts.get(id);
    if (!entry) return;
    entry.acked = true;
    delete entry.pending.ack;
    this.updateAlert(entry);
  }

  markVerdict(id, verdict) {
    const entry = this.alerts.get(id);
    if (!entry || !verdict) return;
    entry.verdict = verdict;
    delete entry.pending.verdict;
    this.updateAlert(entry);
  }

  // Signals lost since the previous status of this connection are announced (politely, once);
  // a first status (a new or reconnected panel) only shows them.
  announceGaps(before, after) {
    if (!before) return;
    const was = lostBy(before);
    const now = lostBy(after);
    const many = ((after && after.participants) || []).length > 1;
    for (const [participant, lost] of now) {
      if (lost > (was.get(participant) || 0)) this.announce(gapWords(participant, lost, many), false);
    }
  }

  announce(text, assertive) {
    const region = assertive ? this.assertiveRegion : this.politeRegion;
    region.textContent = "";
    // A fresh text node after clearing makes screen readers announce repeated messages too.
    setTimeout(() => { region.textContent = text; }, 50);
  }

  // --- rendering --------------------------------------------------------------------------

  renderStatus() {
    if (!this.built) return;
    const status = this.status;
    let state;
    let text;
    if (this.link !== "open") {
      state = this.link === "connecting" && !status ? "connecting" : "offline";
      text = this.linkText || "Not connected to sessionguard.";
    } else if (!status) {
      state = "connecting";
      text = "Connected; waiting for the patient's monitoring status…";
    } else if (status.blind) {
      state = "blind";
      text = "Monitoring is blind: alerts may be missed.";
    } else if (status.limited && status.limited.length) {
      state = "limited";
      text = "Monitoring is on, with a limit: some signs cannot be detected.";
    } else {
      state = "on";
      text = "Monitoring is on.";
    }
    this.stateBox.dataset.state = state;
    this.dataset.state = state;
    this.stateText.textContent = text;

    const shown = state === "blind" || state === "offline"
      ? [...((status && status.reasons) || []), ...((status && status.limited) || [])]
      : state === "limited" ? status.limited : [];
    this.reasons.replaceChildren(...shown.map((r) => el("li", { text: r })));
    const many = ((status && status.participants) || []).length > 1;
    this.gaps.replaceChildren(...[...lostBy(status)].map(([participant, lost]) =>
      el("li", { "data-participant": participant, text: gapWords(participant, lost, many) })));

    const rows = [];
    const participants = (status && status.participants) || [];
    // [label, value, is this a gap in what monitoring can see?]
    if (!participants.length && status) rows.push(["Patient", "not connected", true]);
    for (const p of participants) {
      const who = participants.length > 1 ? `Patient ${p.participant}` : "Patient app";
      rows.push([who, SDK_WORDS[p.sdk] || p.sdk, p.sdk !== "connected"]);
      const media = p.media || {};
      const limits = p.limits || {};
      for (const [label, kind] of [["Camera", "video"], ["Microphone", "audio"]]) {
        const limited = (LIMIT_ROWS[media[kind]] || {})[limits[kind]];
        rows.push([label, limited || MEDIA_WORDS[media[kind]] || media[kind] || "not shared",
          media[kind] === "stopped" || !!limited]);
      }
    }
    const consent = status && status.consent;
    if (consent) {
      const scopes = (consent.monitoring || []).map((s) => SCOPES[s] || s);
      rows.push(["Consent covers", scopes.length ? scopes.join(", ") : "nothing (no monitoring)", !scopes.length]);
      rows.push(["Recording", POLICIES[consent.recording] || consent.recording, false]);
      if (document.activeElement !== this.policySelect) this.policySelect.value = consent.recording;
    }
    this.details.replaceChildren(...rows.flatMap(([k, v, gap]) => [
      el("dt", { text: k }),
      el("dd", { text: v, "data-gap": gap ? "true" : null })]));
    const monitoring = new Set((consent && consent.monitoring) || []);
    const skipped = [...this.skips.values()].filter((k) => (k.missing || []).some((m) => !monitoring.has(m)));
    const notes = [];
    if (this.alertLimit) {
      notes.push(`Alert limit reached: this session has raised ${this.alertLimit.limit ?? "the most"} alerts `
        + "and raises no more (signals are still recorded for the report).");
    }
    if (skipped.length) {
      notes.push(`Not checked, without consent: ${skipped.map((k) => `${k.rule} (needs ${(k.missing || []).join(", ")})`).join("; ")}.`);
    }
    this.skipNote.textContent = notes.join(" ");
    const usable = this.link === "open";
    this.policySelect.disabled = !usable;
    this.policyButton.disabled = !usable;
  }

  renderRequests() {
    // Re-rendering must not lose keyboard focus: back to the same button of the same request,
    // else its decision text, else the request box itself.
    const active = document.activeElement;
    const focused = active && this.requestList.contains(active) ? active.closest(".sg-request") : null;
    const focusId = focused ? focused.dataset.requestId : null;
    const focusAction = focused ? active.dataset.action : null;
    const open = [...this.requests.values()];
    const participants = new Set([...((this.status && this.status.participants) || []).map((p) => p.participant),
      ...open.map((r) => r.participant).filter(Boolean)]);
    this.requestList.replaceChildren(...open.map((request) => {
      const reason = request.reason ? `“${request.reason}”` : "No reason given.";
      const decided = request.decided;
      const box = el("section", { class: "sg-request", "data-request-id": request.id,
        "aria-label": "Recording request" },
        el("h3", { class: "sg-subtitle", text: participants.size > 1 && request.participant
          ? `Patient ${request.participant} asks to record` : "The patient asks to record" }),
        el("p", { text: reason }));
      if (decided === true || decided === false) {
        box.append(el("p", { class: "sg-done", text: decided ? "Approved: the patient may record." : "Declined." }));
      } else if (request.gone) {
        box.append(el("p", { class: "sg-done sg-gone", text: "No longer waiting for an answer: another clinician "
          + "answered it, or the sidecar no longer holds it. The recording policy above is the one in force." }));
      } else {
        // Shown as decided only once the sidecar confirms it (it may have been answered already).
        const sending = request.pending;
        box.append(el("div", { class: "sg-actions" },
          el("button", { type: "button", class: "sg-btn", "data-action": "approve",
            text: sending === true ? "Approving…" : "Approve recording", disabled: sending !== undefined,
            onclick: () => this.decide(request, true) }),
          el("button", { type: "button", class: "sg-btn", "data-action": "decline",
            text: sending === false ? "Declining…" : "Decline", disabled: sending !== undefined,
            onclick: () => this.decide(request, false) })));
      }
      return box;
    }));
    if (focusId !== null) {
      const box = [...this.requestList.children].find((b) => b.dataset.requestId === focusId);
      if (!box) return;
      const again = focusAction ? box.querySelector(`[data-action="${CSS.escape(focusAction)}"]`) : null;
      const done = box.querySelector(".sg-done");
      const target = again && !again.disabled ? again : done || box;
      if (target !== again) target.tabIndex = -1;
      target.focus();
    }
  }

  decide(request, approve) {
    if (this.send({ type: "recording.decision", id: request.id, approve })) {
      request.pending = approve;
      this.renderRequests();
    }
  }

  // Most severe first; then open before acknowledged; then newest first.
  static compare(a, b) {
    const bySeverity = SEVERITIES.indexOf(b.alert.severity) - SEVERITIES.indexOf(a.alert.severity);
    if (bySeverity) return bySeverity;
    const done = Number(a.acked) - Number(b.acked);
    if (done) return done;
    return (b.alert.at || 0) - (a.alert.at || 0);
  }

  sortedAlerts() {
    return [...this.alerts.values()].sort(SessionguardPanel.compare);
  }

  // The whole list from scratch (a new session); one alert's change goes to updateAlert.
  renderAlerts() {
    this.order = this.sortedAlerts();
    this.nodes = new Map(this.order.map((entry) => [entry.alert.id, this.renderAlert(entry)]));
    this.alertList.replaceChildren(...this.nodes.values());
    this.empty.hidden = this.order.length > 0;
  }

  // One alert, new or changed: its node alone is built again and put at its place in the
  // order (a binary search), so a long session does not re-render every alert for each one.
  // Keyboard focus inside it stays: back to the same button, else the next action of the
  // same alert, else the alert itself.
  updateAlert(entry) {
    const id = entry.alert.id;
    const old = this.nodes.get(id);
    const active = document.activeElement;
    const focusKey = old && old.contains(active) ? active.dataset.focusKey || "" : null;
    const was = this.order.indexOf(entry);
    if (was >= 0) this.order.splice(was, 1);
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (SessionguardPanel.compare(this.order[mid], entry) <= 0) lo = mid + 1;
      else hi = mid;
    }
    this.order.splice(lo, 0, entry);
    const node = this.renderAlert(entry);
    this.nodes.set(id, node);
    const after = this.order[lo + 1];
    if (old) old.remove();
    this.alertList.insertBefore(node, after ? this.nodes.get(after.alert.id) : null);
    this.empty.hidden = true;
    if (focusKey !== null) {
      const again = focusKey ? node.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`) : null;
      const next = node.querySelector("button:not([disabled])");
      if (again && !again.disabled) again.focus();
      else if (next) next.focus();
      else { node.tabIndex = -1; node.focus(); }
    }
  }

  renderAlert(entry) {
    const { alert } = entry;
    const severity = SEVERITIES.includes(alert.severity) ? alert.severity : "notice";
    const confidence = typeof alert.confidence === "number"
      ? `Confidence ${Math.round(alert.confidence * 100)} %` : null;
    const evidence = (alert.evidence || []).map((item) =>
      el("li", {}, describeEvidence(item.signal, item.data),
        item.at ? el("span", { class: "sg-time", text: ` · ${clock(item.at)}` }) : null));
    const responses = (alert.suggested_response || []).map((text) => el("li", { text }));
    const id = alert.id;
    const actions = el("div", { class: "sg-actions" });
    if (entry.acked) {
      actions.append(el("span", { class: "sg-done", "data-acked-by": entry.ackedBy.join(" ") || null,
        text: entry.ackedBy.length ? `Acknowledged by ${entry.ackedBy.join(", ")}` : "Acknowledged" }));
    } else {
      actions.append(el("button", { type: "button", class: "sg-btn", "data-action": "ack",
        "data-focus-key": `${id}:ack`, disabled: entry.pending.ack ? true : null,
        text: entry.pending.ack ? "Acknowledging…" : "Acknowledge",
        onclick: () => { if (this.send({ type: "alert.ack", id })) { entry.pending.ack = true; this.updateAlert(entry); } } }));
    }
    if (entry.verdict) {
      actions.append(el("span", { class: "sg-done", "data-verdict": entry.verdict,
        text: VERDICT_WORDS[entry.verdict] || entry.verdict }));
    } else {
      for (const [verdict, label] of [["confirmed", "Confirmed"], ["false_positive", "False alarm"]]) {
        actions.append(el("button", { type: "button", class: "sg-btn sg-btn-quiet",
          "data-action": verdict, "data-focus-key": `${id}:${verdict}`,
          disabled: entry.pending.verdict ? true : null, text: label,
          onclick: () => {
            if (this.send({ type: "alert.feedback", id, verdict })) { entry.pending.verdict = verdict; this.updateAlert(entry); }
          } }));
      }
    }
    const headingId = `sg-alert-${String(id).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    return el("li", { class: "sg-alert", "data-alert-id": id, "data-severity": severity,
      "data-acked": entry.acked ? "true" : "false", "data-muted": alert.muted === true ? "true" : null,
      "aria-labelledby": headingId },
      el("div", { class: "sg-alert-head" },
        el("span", { class: "sg-sev", text: severity }),
        el("h4", { id: headingId, class: "sg-alert-title", text: alert.title || alert.rule }),
        el("span", { class: "sg-time", text: clock(alert.at) })),
      alert.muted === true ? el("p", { class: "sg-muted-note",
        text: "Shown quietly: it repeats an alert marked a false alarm in this session." }) : null,
      alert.message ? el("p", { class: "sg-message", text: alert.message }) : null,
      evidence.length ? el("div", { class: "sg-block" }, el("strong", { text: "What was seen" }),
        el("ul", { class: "sg-evidence" }, evidence)) : null,
      responses.length ? el("div", { class: "sg-block" }, el("strong", { text: "You could" }),
        el("ul", { class: "sg-responses" }, responses)) : null,
      el("p", { class: "sg-meta" }, [confidence, `rule ${alert.rule}`].filter(Boolean).join(" · ")),
      actions);
  }
}

if (!customElements.get("sessionguard-panel")) {
  customElements.define("sessionguard-panel", SessionguardPanel);
}
