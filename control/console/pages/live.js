// Live overview: every stream live on this node (with or without a broadcast) with its
// viewers per protocol, bitrate in/out, fps, uptime and publisher; the cluster's edge
// distribution; end or ban a broadcast's stream; kick any stream and ban its name (for a
// time or until lifted: every node refuses its publish), the banned names listed and lifted.
import { h, badge, fmtBits, fmtDuration, fmtTime, statusLine, table, toast } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { every } from "../lib/view.js";

export async function liveView(main) {
  const status = h("p", { class: "muted", id: "live-status" });
  const streams = h("div", { id: "live-streams" });
  const cluster = h("div", { id: "live-cluster" });
  const banStatus = statusLine("ban-status");
  const bans = h("div", { id: "stream-bans" });
  const banForm = h("form", { id: "ban-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const dur = f.get("duration");
    const body = { reason: f.get("reason") || undefined, duration_s: dur ? Number(dur) : null };
    try {
      const ban = await api("POST", `/api/streams/${encodeURIComponent(f.get("app"))}/${encodeURIComponent(f.get("stream"))}/ban`, body);
      banStatus.ok(`${ban.app}/${ban.stream} banned ${ban.until ? `until ${fmtTime(ban.until)}` : "until lifted"}; its publisher was cut.`);
      await refresh();
    } catch (e) { banStatus.fail(e); }
  } },
    h("div", { class: "grid small" },
      h("label", {}, "App", h("input", { name: "app", required: true, pattern: "[A-Za-z0-9_.\\-]{1,128}", value: "live" })),
      h("label", {}, "Stream name", h("input", { name: "stream", required: true, pattern: "[A-Za-z0-9_.\\-]{1,128}" })),
      h("label", {}, "For", h("select", { name: "duration", value: "3600" },
        h("option", { value: "600" }, "10 minutes"), h("option", { value: "3600" }, "1 hour"),
        h("option", { value: "86400" }, "1 day"), h("option", { value: "604800" }, "7 days"),
        h("option", { value: "" }, "until lifted"))),
      h("label", {}, "Reason", h("input", { name: "reason", maxlength: 500 }))),
    h("button", { type: "submit", class: "danger" }, "Ban stream name"));
  const kick = (app, name) => async () => {
    if (!confirm(`Kick ${app}/${name}? The publisher is cut (it may publish again: ban it to keep it off).`)) return;
    try { await api("POST", `/api/streams/${encodeURIComponent(app)}/${encodeURIComponent(name)}/kick`); toast(`kicked: ${app}/${name}`); await refresh(); }
    catch (e) { toast(e.message); }
  };
  const banRow = (app, name) => () => {
    banForm.elements.app.value = app; banForm.elements.stream.value = name;
    banForm.scrollIntoView({ block: "center" }); banForm.elements.reason.focus();
  };
  main.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, "Live now"), status, streams),
    h("section", { class: "card", id: "bans-card" }, h("h3", {}, "Banned stream names"),
      h("p", { class: "muted" }, "A banned name's publish is refused on every node (RTMP and WHIP) with the reason."), banForm, banStatus, bans),
    h("section", { class: "card" }, h("h3", {}, "Cluster: nodes and edge distribution"), cluster));
  const act = (b, trigger) => async () => {
    const reason = trigger === "ban" ? prompt(`Ban “${b.title}”? Reason:`) : (confirm(`End “${b.title}”? The publisher is cut.`) ? "" : null);
    if (reason === null) return;
    try { await api("POST", `/api/broadcasts/${b.id}/${trigger}`, reason ? { reason } : undefined); toast(`${trigger}: #${b.id}`); await refresh(); }
    catch (e) { toast(e.message); }
  };
  const refresh = async () => {
    const [local, bs] = await Promise.all([
      api("GET", "/api/streams"),
      api("GET", "/api/broadcasts?state=live,interrupted&limit=100").catch(() => ({ items: [] })),
    ]);
    const byKey = new Map(bs.items.map((b) => [`${b.app}/${b.stream}`, b]));
    const rows = local.streams.map((s) => {
      const b = byKey.get(`${s.app}/${s.name}`);
      const pub = s.publisher;
      return h("tr", { dataset: { stream: `${s.app}/${s.name}` } },
        h("td", {}, h("b", { class: "mono" }, `${s.app}/${s.name}`), " ", s.live ? badge("live") : badge("waiting")),
        h("td", {}, b ? h("a", { href: `#/b/${b.id}` }, `#${b.id} ${b.title}`) : h("span", { class: "muted no-broadcast" }, "no broadcast")),
        h("td", { class: "viewers" }, h("b", {}, s.viewers_total), " ",
          h("span", { class: "muted" }, Object.entries(s.viewers || {}).map(([k, v]) => `${k} ${v}`).join(" · "))),
        h("td", {}, fmtBits(s.bitrate_in), " / ", fmtBits(s.bitrate_out)),
        h("td", {}, s.fps ?? "—"),
        h("td", {}, fmtDuration(s.uptime)),
        h("td", { class: "mono" }, pub ? `${pub.protocol} ${pub.remote}` : "—",
          h("div", {}, h("a", { href: `/watch/${s.app}/${s.name}`, target: "_blank", rel: "noopener" }, "viewer page"))),
        h("td", {}, b ? h("div", { class: "row-actions" },
          b.actions.includes("end") ? h("button", { type: "button", class: "secondary", onclick: act(b, "end") }, "End (kick)") : null,
          b.actions.includes("ban") ? h("button", { type: "button", class: "danger", onclick: act(b, "ban") }, "Ban") : null)
          : h("div", { class: "row-actions" },
            h("button", { type: "button", class: "secondary kick", onclick: kick(s.app, s.name) }, "Kick"),
            h("button", { type: "button", class: "danger ban", onclick: banRow(s.app, s.name) }, "Ban name…"))));
    });
    streams.replaceChildren(table(["Stream", "Broadcast", "Viewers", "Bitrate in / out", "fps", "Uptime", "Publisher", ""], rows, "No stream is live on this node."));
    status.textContent = `${local.total} stream(s) on this node · ${local.streams.reduce((n, s) => n + s.viewers_total, 0)} viewers · refreshed ${new Date().toLocaleTimeString()}`;
    try {
      const bl = await api("GET", "/api/stream-bans");
      bans.replaceChildren(table(["Stream", "Until", "Reason", "By", ""], bl.items.map((x) => h("tr", { dataset: { stream: `${x.app}/${x.stream}` } },
        h("td", { class: "mono" }, `${x.app}/${x.stream}`), h("td", {}, x.until ? fmtTime(x.until) : "until lifted"),
        h("td", {}, x.reason || "—"), h("td", {}, `${x.by} · ${fmtTime(x.at)}`),
        h("td", {}, h("button", { type: "button", class: "secondary lift", onclick: async () => {
          try { await api("DELETE", `/api/streams/${encodeURIComponent(x.app)}/${encodeURIComponent(x.stream)}/ban`); banStatus.ok(`${x.app}/${x.stream}: ban lifted`); await refresh(); }
          catch (e) { banStatus.fail(e); }
        } }, "Lift")))), "No stream name is banned."));
    } catch (e) { bans.replaceChildren(h("p", { class: "muted" }, `Bans: ${e.message}`)); }
    try {
      const [nodes, cs] = await Promise.all([api("GET", "/api/cluster/nodes"), api("GET", "/api/cluster/streams")]);
      cluster.replaceChildren(
        table(["Node", "Role", "HTTP", "Viewers", "Out", "CPU", "Streams"], nodes.nodes.map((n) => h("tr", {},
          h("td", { class: "mono" }, n.node), h("td", {}, n.role), h("td", { class: "mono" }, n.http), h("td", {}, n.viewers),
          h("td", {}, fmtBits(n.bandwidth_out)), h("td", {}, n.cpu !== undefined ? `${Math.round(n.cpu * 100)} %` : "—"), h("td", {}, n.streams ?? "—"))), "No node has reported yet."),
        table(["Stream", "Origin", "Edges", "Viewers per node", ""], cs.streams.map((s) => h("tr", { dataset: { stream: `${s.app}/${s.name}` } },
          h("td", { class: "mono" }, `${s.app}/${s.name}`), h("td", { class: "mono" }, (s.origins || []).join(", ") || "—"),
          h("td", { class: "mono" }, (s.edges || []).join(", ") || "—"),
          h("td", {}, Object.entries(s.viewers || {}).map(([k, v]) => `${k}: ${v}`).join(" · ") || "0"),
          h("td", {}, h("div", { class: "row-actions" }, // kick and ban reach whichever node has the publisher
            h("button", { type: "button", class: "secondary kick", onclick: kick(s.app, s.name) }, "Kick"),
            h("button", { type: "button", class: "danger ban", onclick: banRow(s.app, s.name) }, "Ban name…"))))), "No stream in the cluster directory."));
    } catch (e) { cluster.replaceChildren(h("p", { class: "muted" }, `Cluster: ${e.message}`)); }
  };
  every(3000, () => refresh().catch((e) => { status.textContent = e.message; }));
}
