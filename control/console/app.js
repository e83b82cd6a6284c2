// berrylive operator console: plain ES module, no build step.
// Third-party code (mpegts.js, socket.io-client) comes from node_modules, installed by
// `make console` (npm ci), and is loaded only when a view needs it.

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const TOKEN_KEY = "berrylive.token";
const USER_KEY = "berrylive.user";
let timers = [];
let cleanups = [];

// ---- helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function me() { return JSON.parse(sessionStorage.getItem(USER_KEY) || "null"); }
function isOperator() { return me()?.role === "operator"; }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, raw = false) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let payload;
  if (body instanceof Blob) { payload = body; headers["Content-Type"] = body.type || "application/octet-stream"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, { method, headers, body: payload });
  if (r.status === 401 && path !== "/api/auth/login") { signOut(); throw new ApiError(401, "unauthorized", "signed out"); }
  if (!r.ok) {
    let err = { code: "http_" + r.status, message: r.statusText };
    try { err = (await r.json()).error || err; } catch { /* not JSON */ }
    throw new ApiError(r.status, err.code, err.message);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

function fmtTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
function fmtBits(bps) {
  if (bps === null || bps === undefined) return "—";
  if (bps >= 1e6) return (bps / 1e6).toFixed(2) + " Mb/s";
  return Math.round(bps / 1e3) + " kb/s";
}
function fmtFen(fen) { return "¥" + (fen / 100).toFixed(2); }
function badge(state) { return h("span", { class: `badge ${state}`, "data-state": state }, state.replace("_", " ")); }
function localToIso(value) { return value ? new Date(value).toISOString() : null; }
function isoToLocal(iso) {
  const d = new Date(iso); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

function every(ms, fn) { fn(); const id = setInterval(fn, ms); timers.push(id); }
function resetView() {
  timers.forEach(clearInterval); timers = [];
  cleanups.forEach((fn) => { try { fn(); } catch { /* ignore */ } }); cleanups = [];
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    if (document.querySelector(`script[src="${src}"]`)) return resolve();
    const s = h("script", { src });
    s.onload = resolve; s.onerror = () => reject(new Error(`cannot load ${src} (run: make console)`));
    document.head.append(s);
  });
}

// ---- sign in / out ------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(USER_KEY);
  resetView(); route();
}

function loginView() {
  $("#nav").hidden = true;
  main.replaceChildren(h("section", { id: "login-view", class: "card narrow" },
    h("h2", {}, "Sign in"),
    h("form", { id: "login-form", onsubmit: onLogin },
      h("label", {}, "User name", h("input", { name: "username", autocomplete: "username", required: true, maxlength: 64 })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 1024 })),
      h("button", { type: "submit" }, "Sign in"),
      h("p", { class: "error", id: "login-error", role: "alert" }))));
}

async function onLogin(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    const r = await api("POST", "/api/auth/login", { username: f.get("username"), password: f.get("password") });
    sessionStorage.setItem(TOKEN_KEY, r.token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(r.user));
    location.hash = "#/schedule"; route();
  } catch (e) { $("#login-error").textContent = e.message; }
}

// ---- schedule -----------------------------------------------------------------------

function scheduleView() {
  const filter = h("select", { id: "state-filter", onchange: () => refresh() },
    h("option", { value: "" }, "all states"),
    ...["scheduled", "live", "interrupted", "ended", "replay_ready", "cancelled", "banned"].map((s) => h("option", { value: s }, s)));
  const body = h("tbody", { id: "schedule-body" });
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { style: "margin:0;flex:1" }, "Schedule"), filter),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Start"), h("th", {}, "Title"), h("th", {}, "Anchor"), h("th", {}, "State"), h("th", {}, "Reminders"))), body)));
  const refresh = async () => {
    const q = filter.value ? `&state=${filter.value}` : "";
    const page = await api("GET", `/api/broadcasts?limit=100${q}`);
    const rows = page.items.map((b) => h("tr", { class: "row", dataset: { id: b.id }, onclick: () => { location.hash = `#/b/${b.id}`; } },
      h("td", {}, fmtTime(b.scheduled_start)), h("td", {}, b.title), h("td", {}, b.anchor_id ?? "—"),
      h("td", {}, badge(b.state)), h("td", {}, b.reminder_count)));
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No broadcasts yet."))]));
  };
  every(4000, () => refresh().catch((e) => toast(e.message)));
}

// ---- new broadcast ------------------------------------------------------------------

async function newView() {
  const start = new Date(Date.now() + 3600e3); start.setMinutes(0, 0, 0);
  const end = new Date(start.getTime() + 2 * 3600e3);
  const anchors = isOperator() ? (await api("GET", "/api/users?role=anchor&limit=100")).items : [];
  const form = h("form", { id: "new-form", onsubmit: onCreate },
    h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 200 })),
    h("label", {}, "Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 })),
    h("div", { class: "grid" },
      h("label", {}, "Start", h("input", { name: "start", type: "datetime-local", required: true, value: isoToLocal(start.toISOString()) })),
      h("label", {}, "End", h("input", { name: "end", type: "datetime-local", value: isoToLocal(end.toISOString()) }))),
    h("label", {}, "Anchor", h("select", { name: "anchor" }, h("option", { value: "" }, "— none —"),
      ...anchors.map((a) => h("option", { value: a.id }, `${a.display_name || a.username} (${a.username})`)))),
    h("label", {}, "Linked product ids (comma separated)", h("input", { name: "products", placeholder: "101, 102", pattern: "[0-9, ]*" })),
    h("fieldset", {}, h("legend", {}, "Settings"),
      ...["comments", "likes", "replay", "sharing"].map((k) => h("label", {}, h("input", { type: "checkbox", name: k, checked: true }), " " + k))),
    h("button", { type: "submit" }, "Create broadcast"),
    h("p", { class: "error", id: "new-error", role: "alert" }));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "New broadcast"), form));
}

async function onCreate(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = {
    title: f.get("title"),
    description: f.get("description") || "",
    scheduled_start: localToIso(f.get("start")),
    scheduled_end: localToIso(f.get("end")),
    product_ids: String(f.get("products") || "").split(",").map((s) => s.trim()).filter(Boolean).map(Number),
    settings: Object.fromEntries(["comments", "likes", "replay", "sharing"].map((k) => [k, f.get(k) === "on"])),
  };
  if (f.get("anchor")) body.anchor_id = Number(f.get("anchor"));
  try {
    const b = await api("POST", "/api/broadcasts", body);
    toast(`Broadcast #${b.id} scheduled`);
    location.hash = `#/b/${b.id}`;
  } catch (e) { $("#new-error").textContent = e.message; }
}

// ---- one broadcast: push URL, QR, dashboard, preview, card, lottery, moderation -----

async function broadcastView(id) {
  let b = await api("GET", `/api/broadcasts/${id}`);
  const room = `${b.app}/${b.stream}`;
  const header = h("div", { class: "row-actions" }, h("h2", { style: "margin:0;flex:1" }, `#${b.id} ${b.title}`), h("span", { id: "state" }, badge(b.state)));
  const actions = h("div", { class: "row-actions", id: "actions" });
  const info = h("p", { class: "muted", id: "times" });
  const push = h("section", { class: "card", id: "push" }, h("h3", {}, "Push URL"));
  const dash = h("section", { class: "card", id: "dashboard" }, h("h3", {}, "Live"),
    h("div", { class: "figures" },
      ...[["viewers", "viewers"], ["bitrate_in", "bitrate in"], ["bitrate_out", "bitrate out"], ["fps", "fps"],
        ["comments_per_s", "comments/s"], ["likes", "likes"], ["orders", "orders"], ["gmv", "GMV"]]
        .map(([k, label]) => h("div", { class: "figure" }, h("b", { id: `fig-${k}` }, "—"), h("span", {}, label)))),
    h("p", { class: "muted", id: "fig-viewers-detail" }));
  const preview = h("section", { class: "card" }, h("h3", {}, "Preview (WS-FLV)"),
    h("video", { id: "preview", muted: true, controls: true, playsinline: true }),
    h("div", { class: "row-actions" }, h("button", { type: "button", id: "preview-start", onclick: () => startPreview(b) }, "Play preview")),
    h("p", { class: "muted", id: "preview-status" }));
  const shop = h("section", { class: "card" }, h("h3", {}, "Now explaining"),
    h("form", { class: "row-actions", onsubmit: async (ev) => {
      ev.preventDefault();
      const pid = Number(new FormData(ev.target).get("product"));
      try { await api("POST", `/api/broadcasts/${b.id}/card`, { product_id: pid }); toast(`Card pushed: product ${pid}`); }
      catch (e) { toast(e.message); }
    } }, h("select", { name: "product", required: true }, ...b.product_ids.map((p) => h("option", { value: p }, `product ${p}`))),
      h("button", { type: "submit", disabled: b.product_ids.length === 0 }, "Push card")));
  const lottery = h("section", { class: "card" }, h("h3", {}, "Lottery"),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      try {
        const lot = await api("POST", "/api/danmaku/lotteries", { room, title: f.get("title"), prizes: [{ name: f.get("prize"), stock: Number(f.get("stock")) }] });
        const lid = lot.id ?? lot.lottery?.id;
        $("#lottery-status").replaceChildren(`Lottery ${lid} open. `, h("button", { type: "button", onclick: async () => {
          try { const r = await api("POST", `/api/danmaku/lotteries/${lid}/draw`); $("#lottery-status").textContent = `Drawn: ${JSON.stringify(r.winners ?? r)}`; }
          catch (e) { toast(e.message); }
        } }, "Draw now"));
      } catch (e) { toast(e.message); }
    } },
      h("div", { class: "grid" }, h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 100, value: "Lucky draw" })),
        h("label", {}, "Prize", h("input", { name: "prize", required: true, maxlength: 100 })),
        h("label", {}, "Winners", h("input", { name: "stock", type: "number", min: 1, max: 1000, value: 1 }))),
      h("button", { type: "submit" }, "Start lottery")),
    h("p", { id: "lottery-status", class: "muted" }));
  const moderation = h("section", { class: "card" }, h("h3", {}, "Comments"),
    h("ul", { id: "comments" }), h("p", { class: "muted", id: "comments-status" }, "Connecting…"));
  main.replaceChildren(h("section", { class: "card" }, header, info, actions), push,
    h("div", { class: "grid" }, dash, preview), h("div", { class: "grid" }, shop, lottery, moderation));

  const renderHead = () => {
    $("#state").replaceChildren(badge(b.state));
    info.textContent = `Start ${fmtTime(b.scheduled_start)} · end ${fmtTime(b.scheduled_end)} · live since ${fmtTime(b.started_at)} · stream ${room} · ${b.reminder_count} reminders`;
    const buttons = [];
    const act = (trigger, label, cls) => h("button", { type: "button", class: cls, dataset: { action: trigger }, onclick: async () => {
      const reason = trigger === "ban" ? prompt("Reason for the ban?") : "";
      if (trigger === "ban" && reason === null) return;
      try { b = await api("POST", `/api/broadcasts/${b.id}/${trigger}`, reason ? { reason } : undefined); renderHead(); renderPush(); }
      catch (e) { toast(e.message); }
    } }, label);
    if (b.actions.includes("end")) buttons.push(act("end", "End broadcast", "secondary"));
    if (b.actions.includes("cancel") && isOperator()) buttons.push(act("cancel", "Cancel", "secondary"));
    if (b.actions.includes("ban") && isOperator()) buttons.push(act("ban", "Ban", "danger"));
    buttons.push(h("label", { class: "secondary" }, "Cover ", h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", onchange: async (ev) => {
      const file = ev.target.files[0]; if (!file) return;
      try { b = await api("PUT", `/api/broadcasts/${b.id}/cover`, file); toast("Cover uploaded"); } catch (e) { toast(e.message); }
    } })));
    actions.replaceChildren(...buttons);
  };

  let qrUrl = null;
  const renderPush = async () => {
    if (!["scheduled", "live", "interrupted"].includes(b.state)) {
      push.replaceChildren(h("h3", {}, "Push URL"), h("p", { class: "muted" }, `No push URL: the broadcast is ${b.state}.`));
      return;
    }
    let p;
    try { p = await api("GET", `/api/broadcasts/${b.id}/push`); }
    catch (e) {
      push.replaceChildren(h("h3", {}, "Push URL"), h("p", { class: "error" }, e.message),
        h("button", { type: "button", onclick: rotate }, "Issue a new key"));
      return;
    }
    const blob = await (await api("GET", p.qr_png, undefined, true)).blob();
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = URL.createObjectURL(blob);
    push.replaceChildren(h("h3", {}, "Push URL"),
      h("div", { class: "grid" },
        h("div", {},
          h("label", {}, "RTMP push URL (mini-program, ffmpeg)", h("input", { id: "push-url", readonly: true, value: p.url, class: "mono" })),
          h("label", {}, "OBS server", h("input", { readonly: true, value: p.server, class: "mono" })),
          h("label", {}, "OBS stream key", h("input", { readonly: true, value: p.stream_key, class: "mono" })),
          h("p", { class: "muted" }, `Valid ${fmtTime(p.not_before)} → ${fmtTime(p.expires_at)}`),
          h("div", { class: "row-actions" },
            h("button", { type: "button", id: "copy-push", onclick: async () => {
              try { await navigator.clipboard.writeText(p.url); toast("Push URL copied"); }
              catch { $("#push-url").select(); document.execCommand("copy"); toast("Push URL copied"); }
            } }, "Copy push URL"),
            h("button", { type: "button", class: "secondary", onclick: rotate }, "Rotate key"),
            isOperator() ? h("button", { type: "button", class: "danger", onclick: revoke }, "Revoke") : null)),
        h("div", { id: "qr" }, h("img", { src: qrUrl, alt: "QR code of the push URL" }),
          h("p", { class: "muted" }, "The anchor scans this in the mini-program."))));
  };
  const rotate = async () => {
    if (!confirm("Issue a new key? The current URL stops working and a live publisher is cut.")) return;
    try { await api("POST", `/api/broadcasts/${b.id}/push/rotate`); b = await api("GET", `/api/broadcasts/${b.id}`); renderPush(); toast("New push key issued"); }
    catch (e) { toast(e.message); }
  };
  const revoke = async () => {
    if (!confirm("Revoke the push key? A live publisher is cut at once.")) return;
    try { b = await api("POST", `/api/broadcasts/${b.id}/push/revoke`); renderPush(); toast("Push key revoked"); }
    catch (e) { toast(e.message); }
  };
  cleanups.push(() => { if (qrUrl) URL.revokeObjectURL(qrUrl); });

  renderHead();
  await renderPush();
  every(2000, async () => {
    try {
      const [nb, s] = await Promise.all([api("GET", `/api/broadcasts/${b.id}`), api("GET", `/api/broadcasts/${b.id}/stats`)]);
      const changed = nb.state !== b.state;
      b = nb;
      if (changed) { renderHead(); renderPush(); }
      $("#fig-viewers").textContent = s.viewers_total ?? 0;
      $("#fig-viewers-detail").textContent = Object.entries(s.viewers).map(([k, v]) => `${k} ${v}`).join(" · ");
      $("#fig-bitrate_in").textContent = fmtBits(s.bitrate_in);
      $("#fig-bitrate_out").textContent = fmtBits(s.bitrate_out);
      $("#fig-fps").textContent = s.fps ?? "—";
      $("#fig-comments_per_s").textContent = s.comments_per_s;
      $("#fig-likes").textContent = s.likes;
      $("#fig-orders").textContent = s.orders;
      $("#fig-gmv").textContent = fmtFen(s.gmv_fen);
    } catch (e) { if (e.status !== 401) toast(e.message); }
  });
  connectComments(b, room).catch((e) => { $("#comments-status").textContent = `Comments unavailable: ${e.message}`; });
}

async function startPreview(b) {
  const status = $("#preview-status");
  try {
    await loadScript("/console/node_modules/mpegts.js/dist/mpegts.js");
    const mpegts = window.mpegts;
    if (!mpegts.getFeatureList().mseLivePlayback) { status.textContent = "This browser cannot play FLV (no MSE)."; return; }
    const urls = await api("GET", `/api/broadcasts/${b.id}/play`);
    const player = mpegts.createPlayer({ type: "flv", isLive: true, url: urls.ws_flv }, { enableStashBuffer: false, liveBufferLatencyChasing: true });
    player.attachMediaElement($("#preview"));
    player.load();
    player.play();
    status.textContent = `Playing ${urls.ws_flv}`;
    cleanups.push(() => { player.destroy(); });
  } catch (e) { status.textContent = e.message; }
}

async function connectComments(b, room) {
  const { io } = await import("/console/node_modules/socket.io-client/dist/socket.io.esm.min.js");
  const t = await api("POST", `/api/broadcasts/${b.id}/danmaku-token`);
  const socket = io("/live", { auth: { room: t.room, token: t.token }, transports: ["websocket"] });
  cleanups.push(() => socket.close());
  const list = $("#comments");
  const moderate = async (body) => {
    try { await api("POST", "/api/danmaku/moderation", { room, ...body }); toast(`${body.action} done`); }
    catch (e) { toast(e.message); }
  };
  socket.on("connect", () => { $("#comments-status").textContent = `Connected to room ${room}`; });
  socket.on("connect_error", (e) => { $("#comments-status").textContent = `Comments: ${e.message}`; });
  socket.on("comments", (batch) => {
    for (const c of batch.comments || []) {
      list.append(h("li", { dataset: { id: c.id } }, h("b", {}, c.nick || c.user), " ", c.text,
        h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "delete", comment_id: c.id }) }, "delete"),
        h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "mute", user_id: c.user, duration_s: 600 }) }, "mute 10 min")));
    }
    for (const id of batch.deleted || []) list.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
    while (list.children.length > 200) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  });
}

// ---- replays ------------------------------------------------------------------------

async function replaysView() {
  const page = await api("GET", "/api/broadcasts?state=replay_ready,ended&limit=100");
  const rows = page.items.map((b) => h("tr", {},
    h("td", {}, fmtTime(b.started_at)), h("td", {}, h("a", { href: `#/b/${b.id}` }, b.title)), h("td", {}, badge(b.state)),
    h("td", {}, b.replay_url ? h("a", { href: b.replay_url, target: "_blank", rel: "noopener" }, "watch replay") : h("span", { class: "muted" }, b.settings.replay ? "processing…" : "replay off"))));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Replays"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Aired"), h("th", {}, "Title"), h("th", {}, "State"), h("th", {}, "Replay"))),
      h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No replays yet."))])))));
}

// ---- router -------------------------------------------------------------------------

async function route() {
  resetView();
  if (!token()) { loginView(); return; }
  const user = me();
  $("#nav").hidden = false;
  $("#who").textContent = `${user.display_name || user.username} · ${user.role}`;
  document.querySelectorAll("[data-role]").forEach((el) => { el.hidden = el.dataset.role !== user.role; });
  const hash = location.hash || "#/schedule";
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", hash.startsWith(`#/${a.dataset.nav}`)));
  try {
    const m = hash.match(/^#\/b\/(\d+)/);
    if (m) await broadcastView(Number(m[1]));
    else if (hash.startsWith("#/new")) await newView();
    else if (hash.startsWith("#/replays")) await replaysView();
    else scheduleView();
  } catch (e) {
    if (e.status !== 401) main.replaceChildren(h("section", { class: "card" }, h("p", { class: "error" }, e.message)));
  }
}

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/auth/logout"); } catch { /* signed out anyway */ }
  signOut();
});
window.addEventListener("hashchange", route);
route();
