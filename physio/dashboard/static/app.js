"use strict";
// Posture monitor dashboard: plain JS, no framework, no network but our server.
// The server keeps the truth (from MQTT); this page only renders what the
// Server-Sent Events stream says. Every value is written with textContent,
// never as HTML, so nothing from the broker can inject markup.

const SEVERITY_RANK = { high: 0, medium: 1, low: 2, info: 3 };
const TYPE_LABEL = {
  fall_detected: "Fall",
  device_disconnected: "Wearable disconnected",
  battery_low: "Battery low",
  slouch_started: "Slouching",
};
const STALE_AFTER_S = 10;   // a state older than this is shown as stale
const CHART_W = 300, CHART_H = 90;

const view = {
  patients: new Map(),   // patient_id -> state (with history [[t_s, flexion_deg|null]])
  gateways: new Map(),   // gateway_id -> {online, since_s}
  alerts: new Map(),     // event_id -> alert
  summaries: new Map(),  // patient_id -> {day, totals}
  directory: {},         // patient_id -> {name, room, bed, location} (dashboard-side only)
  tiles: new Map(),      // patient_id -> tile element
  historyS: 300,
  clockOffsetS: 0,       // server clock minus this device's clock
  user: null,
  loginRequired: false,
  brokerConnected: false,
  firstSnapshot: true,
};

const $ = (id) => document.getElementById(id);
// The name a person reads (from the dashboard's patients file), else the id.
const nameOf = (pid) => (view.directory[pid] && view.directory[pid].name) || pid;
const whereOf = (pid) => (view.directory[pid] && view.directory[pid].location) || "";
const isCancelled = (a) => a.note.startsWith("cancelled");
const serverNow = () => Date.now() / 1000 + view.clockOffsetS;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmtDeg(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)}°`;
}

function fmtClock(tS) {
  return new Date(tS * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

function fmtAgo(tS) {
  const s = Math.max(0, Math.round(serverNow() - tS));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
}

// ---- stream -------------------------------------------------------------

let source = null;

function connect() {
  source = new EventSource("/api/stream");
  source.addEventListener("open", () => setConn(true));
  source.addEventListener("error", () => {
    setConn(false);
    if (source.readyState === EventSource.CLOSED) {
      // A refused stream (session expired) does not retry by itself.
      fetch("/api/snapshot", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) location.href = "/login";
        else setTimeout(connect, 2000);
      }, () => setTimeout(connect, 2000));
    }
  });
  source.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  source.addEventListener("state", (e) => applyState(JSON.parse(e.data)));
  source.addEventListener("alert", (e) => applyAlert(JSON.parse(e.data)));
  source.addEventListener("gateway", (e) => applyGateway(JSON.parse(e.data)));
  source.addEventListener("summary", (e) => applySummary(JSON.parse(e.data)));
  source.addEventListener("broker", (e) => setBroker(JSON.parse(e.data).connected));
  source.addEventListener("intake", (e) => setIntake(JSON.parse(e.data)));
}

// For an administrator: broker messages dropped for breaking the contract.
function setIntake(intake) {
  const reasons = Object.entries((intake && intake.by_reason) || {})
    .map(([reason, count]) => `${reason} ${count}`).join(", ");
  const parts = [];
  if (intake && intake.total) parts.push(`${intake.total} bad broker message(s) dropped (${reasons})`);
  if (intake && intake.clock_untrusted) {
    parts.push(`${intake.clock_untrusted} filed at receipt time (a sender's clock is off)`);
  }
  $("intake").textContent = parts.join("; ");
}

function setConn(live) {
  const node = $("conn");
  node.textContent = live ? "live" : "disconnected, reconnecting…";
  node.className = "pill " + (live ? "pill-ok" : "pill-bad");
}

function setBroker(connected) {
  view.brokerConnected = connected;
  const node = $("broker");
  node.textContent = connected ? "broker connected" : "broker unreachable: data may be old";
  node.className = "pill " + (connected ? "pill-ok" : "pill-bad");
}

function applySnapshot(snap) {
  view.clockOffsetS = snap.now_s - Date.now() / 1000;
  view.historyS = snap.history_s;
  view.user = snap.user;
  view.directory = snap.directory || {};
  view.loginRequired = snap.login_required;
  view.csrfToken = snap.csrf_token || "";  // acks must carry it (X-CSRF-Token)
  $("user").textContent = snap.user ? `Logged in as ${snap.user}` : "";
  $("logout").hidden = !snap.login_required;
  $("name-box").hidden = snap.login_required;
  setBroker(snap.broker_connected);
  setIntake(snap.intake);
  const previous = new Set(view.alerts.keys());
  view.patients.clear();
  view.gateways.clear();
  view.alerts.clear();
  view.summaries.clear();
  for (const g of snap.gateways) view.gateways.set(g.gateway_id, g);
  for (const s of Object.values(snap.summaries)) view.summaries.set(s.patient_id, s);
  for (const a of snap.alerts) view.alerts.set(a.event_id, a);
  for (const p of snap.patients) view.patients.set(p.patient_id, p);
  for (const [pid, tile] of view.tiles) {
    if (!view.patients.has(pid)) { tile.remove(); view.tiles.delete(pid); }
  }
  for (const pid of [...view.patients.keys()].sort()) renderTile(pid);
  renderFeed();
  renderFalls();
  renderWarnings();
  for (const a of view.alerts.values()) if (!previous.has(a.event_id) || view.firstSnapshot) notifyFall(a);
  view.firstSnapshot = false;
  updateAlarm();
}

function applyState(state) {
  const current = view.patients.get(state.patient_id);
  const history = current ? current.history : [];
  const last = history.length ? history[history.length - 1][0] : -Infinity;
  if (state.time_s > last) history.push([state.time_s, state.flexion_deg]);
  while (history.length && history[0][0] < state.time_s - view.historyS) history.shift();
  view.patients.set(state.patient_id, { ...state, history });
  renderTile(state.patient_id);
}

function applyAlert(alert) {
  const isNew = !view.alerts.has(alert.event_id);
  view.alerts.set(alert.event_id, alert);   // de-duplicated by event_id
  renderFeed();
  renderFalls();
  renderTile(alert.patient_id);
  notifyFall(alert);
  updateAlarm(isNew && alert.type === "fall_detected");
}

function applyGateway(gateway) {
  view.gateways.set(gateway.gateway_id, gateway);
  renderWarnings();
  for (const [pid, p] of view.patients) if (p.gateway_id === gateway.gateway_id) renderTile(pid);
}

function applySummary(summary) {
  view.summaries.set(summary.patient_id, summary);
  renderTile(summary.patient_id);
}

// ---- tiles --------------------------------------------------------------

// A fall stays until a person resolves it, even one the wearable cancelled:
// the tile shows it and never "posture ok" meanwhile.
function openFallOf(pid) {
  let found = null;
  for (const a of view.alerts.values()) {
    if (a.patient_id === pid && a.type === "fall_detected" && a.status !== "resolved") {
      if (!found || a.time_s > found.time_s) found = a;
    }
  }
  return found;
}

function renderTile(pid) {
  const state = view.patients.get(pid);
  if (!state) return;
  let tile = view.tiles.get(pid);
  if (!tile) {
    tile = $("tile-template").content.firstElementChild.cloneNode(true);
    tile.dataset.patientId = pid;
    tile.querySelector(".day-btn").addEventListener("click", () => openDay(pid));
    const ids = [...view.tiles.keys(), pid].sort();
    const next = ids[ids.indexOf(pid) + 1];
    $("tiles").insertBefore(tile, next ? view.tiles.get(next) : null);
    view.tiles.set(pid, tile);
  }
  const field = (name) => tile.querySelector(`[data-field="${name}"]`);
  const gateway = view.gateways.get(state.gateway_id);
  const gatewayOnline = gateway ? gateway.online : null;
  const stale = serverNow() - state.received_s > STALE_AFTER_S;
  const offline = gatewayOnline === false;
  const fall = openFallOf(pid);
  field("patient").textContent = nameOf(pid);
  field("where").textContent = [nameOf(pid) !== pid ? pid : "", whereOf(pid)].filter(Boolean).join(" · ");
  const gw = field("gateway");
  gw.textContent = `${state.gateway_id || "?"} ${gatewayOnline === false ? "offline" : gatewayOnline ? "online" : ""}`;
  gw.classList.toggle("offline", gatewayOnline === false);
  field("flexion").textContent = fmtDeg(state.flexion_deg);
  field("lateral").textContent = fmtDeg(state.lateral_deg);
  const posture = field("posture");
  // Order matters: the tile must never contradict the alarm. An open fall
  // wins over everything; a tile without current data never says "ok".
  if (fall) { posture.textContent = `FALL at ${fmtClock(fall.time_s)}${isCancelled(fall) ? " (got up)" : ""}`; posture.className = "pill pill-bad"; }
  else if (offline) { posture.textContent = "not monitored"; posture.className = "pill pill-bad"; }
  else if (stale) { posture.textContent = "no current data"; posture.className = "pill pill-warn"; }
  else if (!state.device_connected || state.flexion_deg === null) { posture.textContent = "no posture data"; posture.className = "pill"; }
  else if (!state.calibrated) { posture.textContent = "not calibrated"; posture.className = "pill pill-warn"; }
  else if (state.slouching) { posture.textContent = "slouching"; posture.className = "pill pill-warn"; }
  else { posture.textContent = "posture ok"; posture.className = "pill pill-ok"; }
  field("activity").textContent = state.activity;
  const connected = field("connected");
  if (offline) {
    connected.textContent = `not monitored since ${fmtClock(gateway.since_s)}`;
    connected.className = "pill pill-bad";
  } else if (stale) {
    connected.textContent = `no data since ${fmtClock(state.received_s)}`;
    connected.className = "pill pill-bad";
  } else {
    connected.textContent = state.device_connected ? "wearable connected" : "wearable disconnected";
    connected.className = "pill " + (state.device_connected ? "pill-ok" : "pill-bad");
  }
  const battery = field("battery");
  battery.textContent = state.battery_pct === null ? "" : `battery ${Math.round(state.battery_pct)}%`;
  battery.className = "pill " + (state.battery_pct !== null && state.battery_pct < 20 ? "pill-bad" : "");
  const summary = view.summaries.get(pid);
  const t = summary && summary.totals;
  field("summary").textContent = !t ? "" : "today: " + [
    t.upright_pct === null ? "no posture data" : `upright ${t.upright_pct}%`,
    `${t.slouch_episodes} slouch episode${t.slouch_episodes === 1 ? "" : "s"}`,
    `worn ${Math.round(t.worn_min)} min`,
    ...(t.falls ? [`${t.falls} fall${t.falls === 1 ? "" : "s"}`] : []),
  ].join(" · ");
  tile.classList.toggle("slouching", !!state.slouching);
  tile.classList.toggle("fall", !!fall);
  tile.classList.toggle("stale", stale || offline);
  tile.title = stale ? `no data since ${fmtClock(state.received_s)}` : "";
  tile.hidden = !matchesFilter(pid);
  drawChart(tile, state);
}

function drawChart(tile, state) {
  const history = state.history || [];
  const threshold = state.slouch_threshold_deg;
  const yMax = Math.max(60, (threshold ?? 0) + 15, ...history.map((h) => h[1] ?? 0));
  const yMin = Math.min(-15, ...history.map((h) => h[1] ?? 0));
  const tEnd = state.time_s, tStart = tEnd - view.historyS;
  const y = (deg) => (CHART_H * (yMax - deg) / (yMax - yMin)).toFixed(1);
  const points = history.filter((h) => h[1] !== null)
    .map((h) => `${(CHART_W * (h[0] - tStart) / view.historyS).toFixed(1)},${y(h[1])}`);
  tile.querySelector(".flexion-line").setAttribute("points", points.join(" "));
  const line = tile.querySelector(".threshold");
  const minutes = Math.round(view.historyS / 60);
  const caption = tile.querySelector('[data-field="chart-caption"]');
  if (threshold === null || threshold === undefined) {
    line.setAttribute("visibility", "hidden");
    caption.textContent = `flexion, last ${minutes} min`;
  } else {
    line.setAttribute("visibility", "visible");
    line.setAttribute("y1", y(threshold));
    line.setAttribute("y2", y(threshold));
    caption.textContent = `flexion, last ${minutes} min · dashed: slouch threshold ${Math.round(threshold)}°`;
  }
}

function matchesFilter(pid) {
  const text = $("filter").value.trim().toLowerCase();
  return !text || [pid, nameOf(pid), whereOf(pid)].some((s) => s.toLowerCase().includes(text));
}

// ---- alerts ---------------------------------------------------------------

function alertDescription(a) {
  const parts = [];
  if (a.flexion_deg !== null) parts.push(`flexion ${fmtDeg(a.flexion_deg)}`);
  if (a.details && a.details.peak_acc_g !== undefined) parts.push(`impact ${a.details.peak_acc_g.toFixed(1)} g`);
  if (a.type === "battery_low" && a.details && a.details.battery_pct !== undefined) parts.push(`${Math.round(a.details.battery_pct)}%`);
  if (a.note) parts.push(a.note);
  return parts.join(" · ");
}

const NOTICE_MARK = { delivered: "✓", sending: "…", retrying: "✗ retrying", failed: "✗ FAILED" };

// Where the escalation notices of a fall stand (webhooks, Apprise, MQTT).
function noticeLine(a) {
  if (!a.notifications || !a.notifications.length) return "";
  return "notified: " + a.notifications.map((n) => {
    let text = `${n.channel} (level ${n.level}) ${NOTICE_MARK[n.state] || n.state}`;
    if (n.state !== "delivered" && n.error) text += ` after ${n.attempts} attempt${n.attempts === 1 ? "" : "s"}: ${n.error}`;
    return text;
  }).join(" · ");
}

function noticeFailing(a) {
  return (a.notifications || []).some((n) => n.state === "retrying" || n.state === "failed");
}

function patientLabel(pid) {
  const where = whereOf(pid);
  return `${nameOf(pid)}${where ? ` (${where})` : ""}`;
}

function ackLine(a) {
  return a.acks.map((k) => `${k.action} by ${k.by} at ${fmtClock(Date.parse(k.time) / 1000)}`).join("; ");
}

function actionButtons(a, container, errorNode) {
  if (a.status === "open") container.append(ackButton(a, "acknowledged", "Acknowledge", errorNode));
  if (a.status !== "resolved") container.append(ackButton(a, "resolved", "Resolve", errorNode));
}

function ackButton(a, action, label, errorNode) {
  const button = el("button", { type: "button", "data-action": action }, label);
  button.addEventListener("click", () => sendAck(a.event_id, action, button, errorNode));
  return button;
}

async function sendAck(eventId, action, button, errorNode) {
  button.disabled = true;
  errorNode.textContent = "";
  try {
    const response = await fetch(`/api/alerts/${encodeURIComponent(eventId)}/ack`, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-Requested-With": "posture-dashboard",
        "X-CSRF-Token": view.csrfToken || "",
      },
      body: JSON.stringify({ action, by: $("by-name").value }),
    });
    if (response.status === 401) { location.href = "/login"; return; }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `server answered ${response.status}`);
    applyAlert(body);
  } catch (err) {
    errorNode.textContent = `Not sent: ${err.message}`;
    button.disabled = false;
  }
}

function renderFeed() {
  const order = $("sort").value;
  const showHandled = $("show-handled").checked;
  const items = [...view.alerts.values()].filter((a) => showHandled || a.status === "open");
  items.sort((a, b) => order === "severity"
    ? (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]) || (b.time_s - a.time_s)
    : b.time_s - a.time_s);
  const feed = $("feed");
  feed.replaceChildren(...items.map((a) => {
    const li = el("li", { class: `alert sev-${a.severity} status-${a.status}`, "data-event-id": a.event_id, "data-type": a.type });
    const line1 = el("div", { class: "line1" });
    line1.append(el("span", { class: "kind" }, `${TYPE_LABEL[a.type] || a.type} · ${patientLabel(a.patient_id)}`),
      el("time", { datetime: a.time, title: a.time }, fmtClock(a.time_s)));
    li.append(line1);
    const description = alertDescription(a);
    if (description) li.append(el("div", {}, description));
    const closedByItself = a.status === "resolved" && !a.acks.length && a.type === "slouch_started";
    const status = [closedByItself ? "closed by itself" : a.status];
    if (a.escalation_level) status.push(`escalated (level ${a.escalation_level})`);
    li.append(el("div", { class: "who", "data-field": "status" }, status.join(" · ") + (a.acks.length ? ` — ${ackLine(a)}` : "")));
    const notices = noticeLine(a);
    if (notices) li.append(el("div", { class: "notices" + (noticeFailing(a) ? " failing" : ""), "data-field": "notices" }, notices));
    const actions = el("div", { class: "actions" });
    const err = el("div", { class: "err", role: "alert" });
    actionButtons(a, actions, err);
    li.append(actions, err);
    return li;
  }));
}

function renderFalls() {
  const open = [...view.alerts.values()]
    .filter((a) => a.type === "fall_detected" && a.status !== "resolved")
    .sort((a, b) => b.time_s - a.time_s);
  $("falls").replaceChildren(...open.map((a) => {
    const cancelled = isCancelled(a) ? " cancelled" : "";
    const box = el("div", { class: `fall-banner status-${a.status}${cancelled}`, role: "alert", "data-event-id": a.event_id });
    box.append(el("strong", {}, `FALL · ${patientLabel(a.patient_id)}`),
      el("span", { "data-field": "when", "data-time-s": a.time_s }, `${fmtClock(a.time_s)} (${fmtAgo(a.time_s)})`));
    if (cancelled) box.append(el("span", {}, "the wearable says the patient got up: check and resolve"));
    if (a.escalation_level) box.append(el("span", { class: "esc" }, `ESCALATED · level ${a.escalation_level}`));
    if (a.acks.length) box.append(el("span", {}, ackLine(a)));
    const notices = noticeLine(a);
    if (notices) box.append(el("span", { class: "notices" + (noticeFailing(a) ? " failing" : ""), "data-field": "notices" }, notices));
    const err = el("span", { class: "err", role: "alert" });
    const actions = el("span", { class: "actions" });
    actionButtons(a, actions, err);
    box.append(actions, err);
    return box;
  }));
}

function renderWarnings() {
  const offline = [...view.gateways.values()].filter((g) => !g.online);
  $("warnings").replaceChildren(...offline.map((g) => {
    const patients = [...view.patients.values()].filter((p) => p.gateway_id === g.gateway_id).length;
    return el("div", { class: "warning", "data-gateway-id": g.gateway_id },
      `Gateway ${g.gateway_id} offline since ${fmtClock(g.since_s)}: ${patients} patient(s) not monitored, falls cannot be detected.`);
  }), ...[...view.gateways.values()].filter((g) => g.online && g.degraded).map((g) =>
    el("div", { class: "warning", "data-gateway-id": g.gateway_id, "data-degraded": "" },
      `Gateway ${g.gateway_id} is degraded: ${g.degraded}`)));
}

// ---- the alarm ------------------------------------------------------------
// An open fall that nobody acknowledged sounds again every few seconds until
// a person acknowledges it (faster, louder and a different sound once it has
// escalated), flashes the tab title, and shows a system notification when the
// user allowed them. Browsers play sound only after a tap on the page, so the
// first screen asks for that tap once.
// window.postureAlarm is read by tests: `beeps` counts sound triggers.

const ALARM_EVERY_MS = Number(new URLSearchParams(location.search).get("alarm_every_s") || 4) * 1000;
const BASE_TITLE = document.title;
const alarm = {
  ctx: null,            // AudioContext, created on the first tap
  beeps: 0,             // sound triggers so far (whether or not audio could play)
  sounded: 0,           // of which actually played
  lastLevel: null,      // escalation level of the last trigger
  ringing: false,       // an unacknowledged fall is sounding
  notifications: 0,     // system notifications shown
  timer: null,
  titleTimer: null,
  titleFlip: false,
  notified: new Set(),  // "event_id:level" already notified
};
window.postureAlarm = alarm;

// Falls that must sound: not acknowledged, not resolved, not withdrawn by the wearable.
function ringingFalls() {
  return [...view.alerts.values()].filter((a) => a.type === "fall_detected" && a.status === "open" && !isCancelled(a));
}

function updateAlarm(fresh = false) {
  const falls = ringingFalls();
  const level = falls.reduce((m, a) => Math.max(m, a.escalation_level || 0), 0);
  if (!falls.length) { stopAlarm(); return; }
  const every = level >= 1 ? ALARM_EVERY_MS * 0.6 : ALARM_EVERY_MS;
  if (!alarm.ringing || fresh || level !== alarm.lastLevel) {
    clearInterval(alarm.timer);
    alarm.ringing = true;
    beep(level);
    alarm.timer = setInterval(() => beep(ringingFalls().reduce((m, a) => Math.max(m, a.escalation_level || 0), 0)), every);
  }
  if (!alarm.titleTimer) alarm.titleTimer = setInterval(flashTitle, 1000);
  flashTitle();
  $("sound-gate").classList.toggle("urgent", true);
}

function stopAlarm() {
  clearInterval(alarm.timer);
  clearInterval(alarm.titleTimer);
  alarm.timer = alarm.titleTimer = null;
  alarm.ringing = false;
  const open = [...view.alerts.values()].filter((a) => a.type === "fall_detected" && a.status !== "resolved").length;
  document.title = open ? `(${open}) ${BASE_TITLE}` : BASE_TITLE;
  $("sound-gate").classList.remove("urgent");
}

function flashTitle() {
  const falls = ringingFalls();
  if (!falls.length) return;
  alarm.titleFlip = !alarm.titleFlip;
  const who = nameOf(falls[0].patient_id);
  document.title = alarm.titleFlip ? `⚠ FALL · ${who}` : `⚠⚠ ${falls.length} open fall${falls.length === 1 ? "" : "s"} · ${BASE_TITLE}`;
}

// Tones per level: a two-note chime; escalated: three higher, louder notes;
// level 2: a loud rising siren.
const PATTERNS = [
  { gain: 0.25, notes: [[880, 0, 0.25], [660, 0.3, 0.25]] },
  { gain: 0.5, notes: [[988, 0, 0.18], [1319, 0.22, 0.18], [988, 0.44, 0.18]] },
  { gain: 0.9, notes: [[600, 0, 0.5, 1400], [600, 0.55, 0.5, 1400]] },
];

function beep(level) {
  alarm.beeps += 1;
  alarm.lastLevel = level;
  const ctx = alarm.ctx;
  if (!ctx || ctx.state !== "running") {
    // No sound yet, or the browser suspended it (a tablet that slept): ask
    // for a tap again rather than stay silent without saying so.
    if (ctx) ctx.resume().catch(() => {});
    $("sound-gate").hidden = false;
    return;
  }
  const pattern = PATTERNS[Math.min(level, PATTERNS.length - 1)];
  for (const [freq, at, length, sweepTo] of pattern.notes) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const t0 = ctx.currentTime + at;
    osc.type = level >= 2 ? "sawtooth" : "sine";
    osc.frequency.setValueAtTime(freq, t0);
    if (sweepTo) osc.frequency.linearRampToValueAtTime(sweepTo, t0 + length);
    gain.gain.setValueAtTime(pattern.gain, t0);
    gain.gain.exponentialRampToValueAtTime(0.001, t0 + length);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t0);
    osc.stop(t0 + length);
  }
  alarm.sounded += 1;
}

// A system notification for a new fall and for each escalation of it.
function notifyFall(a) {
  if (a.type !== "fall_detected" || a.status !== "open" || isCancelled(a)) return;
  const key = `${a.event_id}:${a.escalation_level || 0}`;
  if (alarm.notified.has(key)) return;
  alarm.notified.add(key);
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const escalated = a.escalation_level ? ` · ESCALATED level ${a.escalation_level}` : "";
    const n = new Notification(`FALL · ${patientLabel(a.patient_id)}${escalated}`, {
      body: `${fmtClock(a.time_s)}: not acknowledged yet. Open the dashboard to acknowledge.`,
      tag: a.event_id, renotify: true, requireInteraction: true,
    });
    n.onclick = () => { window.focus(); n.close(); };
    alarm.notifications += 1;
  } catch (err) {
    // Some browsers allow notifications only from a service worker; the sound and title still work.
  }
}

function enableSound() {
  if (!alarm.ctx && (window.AudioContext || window.webkitAudioContext)) {
    alarm.ctx = new (window.AudioContext || window.webkitAudioContext)();
  }
  if (alarm.ctx && alarm.ctx.state === "suspended") alarm.ctx.resume();
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
  $("sound-gate").hidden = true;
}

function initAlarm() {
  const gate = $("sound-gate");
  // Every page load needs its own tap for sound, whatever was allowed before.
  gate.hidden = false;
  $("sound-on").addEventListener("click", enableSound);
  const onGesture = () => { if (!gate.hidden || !alarm.ctx) enableSound(); };
  document.addEventListener("pointerdown", onGesture);
  document.addEventListener("keydown", onGesture);
}

// ---- day dialog -----------------------------------------------------------

const TOTAL_LABELS = [
  ["worn_min", "worn", "min"], ["upright_min", "upright", "min"], ["slouched_min", "slouched", "min"],
  ["upright_pct", "upright", "%"], ["slouched_pct", "slouched", "%"], ["active_min", "moving/walking", "min"],
  ["lying_min", "lying", "min"], ["slouch_episodes", "slouch episodes", ""],
  ["slouch_mean_min", "mean episode", "min"], ["slouch_longest_min", "longest episode", "min"],
  ["falls", "falls", ""], ["falls_cancelled", "falls cancelled", ""],
];

async function openDay(pid) {
  const dialog = $("day-dialog");
  $("day-title").textContent = `${pid}: today`;
  $("day-totals").replaceChildren();
  $("day-plot").removeAttribute("src");
  dialog.showModal();
  const response = await fetch(`/api/patients/${encodeURIComponent(pid)}/summary.json`, { credentials: "same-origin" });
  if (!response.ok) { $("day-totals").append(el("p", { class: "muted" }, "No summary yet for this patient.")); return; }
  const summary = await response.json();
  $("day-title").textContent = `${pid}: ${summary.day}`;
  for (const [key, label, unit] of TOTAL_LABELS) {
    const value = summary.totals[key];
    const row = el("div", { "data-total": key });
    row.append(el("dt", {}, label), el("dd", {}, value === null ? "–" : `${value}${unit ? " " + unit : ""}`));
    $("day-totals").append(row);
  }
  $("day-plot").src = `/api/patients/${encodeURIComponent(pid)}/summary.svg?day=${summary.day}&t=${Date.now()}`;
}

// ---- wiring ---------------------------------------------------------------

function init() {
  initAlarm();
  const nameInput = $("by-name");
  nameInput.value = localStorage.getItem("posture-dashboard-name") || "";
  nameInput.addEventListener("change", () => localStorage.setItem("posture-dashboard-name", nameInput.value));
  $("sort").addEventListener("change", renderFeed);
  $("show-handled").addEventListener("change", renderFeed);
  $("filter").addEventListener("input", () => { for (const pid of view.tiles.keys()) renderTile(pid); });
  $("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-Requested-With": "posture-dashboard" } });
    location.href = "/login";
  });
  // Ages and staleness move with the clock, not only with messages.
  setInterval(() => {
    for (const pid of view.tiles.keys()) renderTile(pid);
    for (const node of document.querySelectorAll("[data-time-s]")) {
      const tS = Number(node.dataset.timeS);
      node.textContent = `${fmtClock(tS)} (${fmtAgo(tS)})`;
    }
    $("patient-count").textContent = `(${view.patients.size})`;
    $("no-patients").hidden = view.patients.size > 0;
  }, 1000);
  connect();
}

init();
