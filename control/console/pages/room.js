// A broadcast's live room: charts minute by minute since it went live, on one time axis
// (viewers, comments and likes, orders and GMV, stream health), with the card pushes
// marked, drawn from GET /api/broadcasts/{id}/series (polled with ?since=).
import { h, badge, fmtFen, fmtTime, table } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { every } from "../lib/view.js";
import { timeChart } from "../lib/chart.js";
import { productLabel, productMap } from "../lib/names.js";
import { broadcastTabs } from "./broadcast.js";

const POLL_MS = 5000;

export async function roomView(main, id) {
  const b = await api("GET", `/api/broadcasts/${id}`);
  const products = await productMap();
  const status = h("p", { class: "muted", id: "series-status" }, "Loading…");
  const charts = h("div", { class: "charts", id: "charts" });
  const totals = h("p", { id: "series-totals" });
  const minutes = h("details", { id: "series-table" }, h("summary", {}, "Minute by minute"));
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}: live room`), badge(b.state)),
    broadcastTabs(b, "room"), status, totals, charts, minutes));
  // the same figures as a table, each minute with the cards pushed in it
  const renderTable = (points, markers, step) => {
    const rows = [...points].reverse().map((p) => {
      const t0 = Date.parse(p.t) / 1000;
      const cards = markers.filter((m) => m.t >= t0 && m.t < t0 + step).map((m) => m.label).join(", ");
      return h("tr", { dataset: { t: p.t } }, h("td", {}, new Date(p.t).toLocaleTimeString()), h("td", {}, p.viewers ?? 0),
        h("td", {}, p.comments ?? 0), h("td", {}, p.likes ?? 0), h("td", {}, p.orders ?? 0), h("td", {}, fmtFen(p.gmv_fen ?? 0)),
        h("td", {}, fmtFen(p.refunded_fen ?? 0)), h("td", {}, p.bitrate_in_kbps === null || p.bitrate_in_kbps === undefined ? "—" : Math.round(p.bitrate_in_kbps)),
        h("td", {}, p.fps ?? "—"), h("td", {}, p.keyframe_interval_s ?? "—"), h("td", {}, p.dropped_viewers ?? 0), h("td", {}, cards));
    });
    minutes.replaceChildren(h("summary", {}, "Minute by minute"), table(["Minute", "Viewers", "Comments", "Likes", "Orders", "GMV", "Refunded", "kb/s in", "fps", "GOP s", "Dropped", "Cards"], rows, "No data yet."));
  };
  const width = Math.max(320, Math.min(1200, main.clientWidth - 60));
  const defs = [
    ["Concurrent viewers", [
      { label: "viewers (peak)", value: (p) => p.viewers },
      ...["flv", "ws-flv", "hls", "rtmp", "whep"].map((k) => ({ label: k, value: (p) => p.viewers_by_protocol?.[k] ?? null })),
    ]],
    ["Comments and likes per minute", [
      { label: "comments", value: (p) => p.comments },
      { label: "likes", value: (p) => p.likes, scale: "likes" },
    ], "likes"],
    ["Orders and GMV per minute", [
      { label: "orders", value: (p) => p.orders },
      { label: "GMV ¥", value: (p) => (p.gmv_fen ?? 0) / 100, scale: "yuan" },
      { label: "refunded ¥", value: (p) => (p.refunded_fen ?? 0) / 100, scale: "yuan" },
    ], "yuan"],
    ["Stream health", [
      { label: "bitrate in kb/s", value: (p) => p.bitrate_in_kbps },
      { label: "fps", value: (p) => p.fps, scale: "small" },
      { label: "keyframe interval s", value: (p) => p.keyframe_interval_s, scale: "small" },
      { label: "dropped viewers", value: (p) => p.dropped_viewers, scale: "small" },
    ], "small"],
  ];
  let window_ = null; // [from, to] in seconds, from the series' start to its end (or now)
  const xRange = () => window_ || [Date.now() / 1000 - 600, Date.now() / 1000];
  const made = [];
  for (const [title, series, axes2] of defs) made.push(await timeChart(title, series, { width, axes2, xRange }));
  charts.replaceChildren(...made.map((c) => c.el));

  let points = [];
  let markers = [];
  let since = null;
  const merge = (fresh) => {
    const byT = new Map(points.map((p) => [p.t, p]));
    for (const p of fresh) byT.set(p.t, p);
    points = [...byT.values()].sort((a, c) => Date.parse(a.t) - Date.parse(c.t));
  };
  const poll = async () => {
    let s;
    try { s = await api("GET", `/api/broadcasts/${id}/series${since ? `?since=${encodeURIComponent(since)}` : ""}`); }
    catch (e) {
      if (e.status === 404) { status.textContent = "No data yet."; status.dataset.state = "empty"; return; }
      status.textContent = `Series: ${e.message}`; return;
    }
    merge(s.points || []);
    // the last minute is still filling: ask again from it
    since = points.length ? points[points.length - 1].t : null;
    if (since) since = new Date(Date.parse(since) - 1000).toISOString();
    try {
      const cards = await api("GET", `/api/broadcasts/${id}/cards?limit=100`);
      markers = (cards.items || []).map((c) => ({ t: Date.parse(c.pushed_at) / 1000, label: (c.flash_sale_id ? "⚡ " : "") + productLabel(products, c.product_id) }));
    } catch { /* markers are extra */ }
    if (points.length) {
      const step = s.step_s || 60;
      const from = Date.parse(s.started_at || points[0].t) / 1000;
      const last = Date.parse(points[points.length - 1].t) / 1000 + step;
      const to = Math.max(last, s.ended_at ? Date.parse(s.ended_at) / 1000 : Date.now() / 1000);
      window_ = [Math.min(from, Date.parse(points[0].t) / 1000), to];
    }
    for (const c of made) c.set(points, markers);
    const wasOpen = minutes.open;
    renderTable(points, markers, s.step_s || 60);
    minutes.open = wasOpen;
    if (!points.length) { status.textContent = "No data yet."; status.dataset.state = "empty"; }
    else {
      status.dataset.state = "data";
      status.textContent = `${points.length} minute(s) since ${fmtTime(s.started_at || points[0].t)}${s.ended_at ? `, ended ${fmtTime(s.ended_at)}` : ", updated every 5 s"}.`;
    }
    const sum = (k) => points.reduce((n, p) => n + (p[k] || 0), 0);
    const peak = points.reduce((n, p) => Math.max(n, p.viewers || 0), 0);
    totals.textContent = points.length ? `peak viewers ${peak} · comments ${sum("comments")} · likes ${sum("likes")} · orders ${sum("orders")} · GMV ${fmtFen(sum("gmv_fen"))} · refunded ${fmtFen(sum("refunded_fen"))}` : "";
    totals.dataset.gmv = String(sum("gmv_fen"));
    try {
      const sm = await api("GET", `/api/broadcasts/${id}/summary`);
      totals.append(` · unique viewers ${sm.unique_viewers ?? 0}${sm.peak_at ? ` · peak at ${fmtTime(sm.peak_at)}` : ""}`);
    } catch { /* the summary is extra */ }
  };
  every(POLL_MS, () => { poll().catch((e) => { status.textContent = e.message; }); });
}
