// Live overview: every stream live on this node (with or without a broadcast) with its
// viewers per protocol, bitrate in/out, fps, uptime and publisher; the cluster's edge
// distribution; end or ban a broadcast's stream.
import { h, badge, fmtBits, fmtDuration, table, toast } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { every } from "../lib/view.js";

export async function liveView(main) {
  const status = h("p", { class: "muted", id: "live-status" });
  const streams = h("div", { id: "live-streams" });
  const cluster = h("div", { id: "live-cluster" });
  main.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, "Live now"), status, streams),
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
          : h("span", { class: "muted", title: "no API cuts a stream without a broadcast" }, "—")));
    });
    streams.replaceChildren(table(["Stream", "Broadcast", "Viewers", "Bitrate in / out", "fps", "Uptime", "Publisher", ""], rows, "No stream is live on this node."));
    status.textContent = `${local.total} stream(s) on this node · ${local.streams.reduce((n, s) => n + s.viewers_total, 0)} viewers · refreshed ${new Date().toLocaleTimeString()}`;
    try {
      const [nodes, cs] = await Promise.all([api("GET", "/api/cluster/nodes"), api("GET", "/api/cluster/streams")]);
      cluster.replaceChildren(
        table(["Node", "Role", "HTTP", "Viewers", "Out", "CPU", "Streams"], nodes.nodes.map((n) => h("tr", {},
          h("td", { class: "mono" }, n.node), h("td", {}, n.role), h("td", { class: "mono" }, n.http), h("td", {}, n.viewers),
          h("td", {}, fmtBits(n.bandwidth_out)), h("td", {}, n.cpu !== undefined ? `${Math.round(n.cpu * 100)} %` : "—"), h("td", {}, n.streams ?? "—"))), "No node has reported yet."),
        table(["Stream", "Origin", "Edges", "Viewers per node"], cs.streams.map((s) => h("tr", {},
          h("td", { class: "mono" }, `${s.app}/${s.name}`), h("td", { class: "mono" }, (s.origins || []).join(", ") || "—"),
          h("td", { class: "mono" }, (s.edges || []).join(", ") || "—"),
          h("td", {}, Object.entries(s.viewers || {}).map(([k, v]) => `${k}: ${v}`).join(" · ") || "0"))), "No stream in the cluster directory."));
    } catch (e) { cluster.replaceChildren(h("p", { class: "muted" }, `Cluster: ${e.message}`)); }
  };
  every(3000, () => refresh().catch((e) => { status.textContent = e.message; }));
}
