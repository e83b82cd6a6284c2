// An ended broadcast: when it ran, its audience (peak and unique viewers, when the summary
// API answers), its sales summary, its replay (player page), MP4 and clips.
import { h, fmtDuration, fmtFen, fmtTime, table } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { productLabel, productMap } from "../lib/names.js";

export async function afterShowCard(b) {
  const el = h("section", { class: "card", id: "after-show" }, h("h3", {}, "After the show"));
  const [sales, summary, replays, products] = await Promise.all([
    api("GET", `/api/broadcasts/${b.id}/sales`).catch((e) => ({ error: e.message })),
    api("GET", `/api/broadcasts/${b.id}/summary`).catch(() => null),
    api("GET", `/api/replays?broadcast_id=${b.id}&limit=10`).catch(() => ({ items: [] })),
    productMap(),
  ]);
  const ran = b.started_at && b.ended_at ? (new Date(b.ended_at) - new Date(b.started_at)) / 1000 : null;
  el.append(h("p", { id: "ended-at" }, `Live ${fmtTime(b.started_at)} → ended ${fmtTime(b.ended_at)}`, ran ? ` (${fmtDuration(ran)})` : ""));
  if (summary) {
    el.append(h("div", { class: "figures", id: "audience-summary" },
      ...[[summary.peak_viewers ?? 0, `peak viewers${summary.peak_at ? ` (${fmtTime(summary.peak_at)})` : ""}`],
        [summary.unique_viewers ?? 0, "unique viewers"], [summary.comments ?? 0, "comments"], [summary.likes ?? 0, "likes"]]
        .map(([v, label]) => h("div", { class: "figure" }, h("b", {}, v), h("span", {}, label)))));
  }
  if (sales.error) el.append(h("p", { class: "error" }, `Sales: ${sales.error}`));
  else {
    el.append(h("div", { class: "figures", id: "sales-summary" },
      ...[[fmtFen(sales.gmv_fen), "GMV"], [sales.orders, "orders"], [sales.buyers, "buyers"], [fmtFen(sales.refunded_fen), "refunded"],
        [sales.orders_placed, "orders placed"], [`${Math.round((sales.card_conversion || 0) * 100)} %`, "card conversion"]]
        .map(([v, label]) => h("div", { class: "figure" }, h("b", {}, v ?? 0), h("span", {}, label)))));
    if ((sales.products || []).length) {
      el.append(table(["Product", "Orders", "GMV", "Explained", "Orders / explain"], sales.products.map((p) => h("tr", {},
        h("td", {}, productLabel(products, p.product_id)), h("td", {}, p.orders ?? 0), h("td", {}, fmtFen(p.gmv_fen ?? 0)),
        h("td", {}, `${p.times_explained ?? 0}× · ${fmtDuration(p.explained_seconds ?? 0)}`), h("td", {}, p.orders_per_explain ?? "—")))));
    }
  }
  const items = replays.items || [];
  if (!items.length) {
    el.append(h("p", { class: "muted", id: "replay-none" }, b.settings?.replay === false ? "Replay is off for this broadcast." : "No replay yet (it is being finalized)."));
  }
  for (const r of items) {
    el.append(h("div", { class: "replay-box", dataset: { replay: r.id } },
      r.cover ? h("img", { src: r.cover, alt: "replay cover", class: "thumb" }) : null,
      h("div", { class: "grow" },
        h("p", {}, h("b", {}, `Replay ${r.id}`), ` · ${r.state} · ${fmtDuration(r.duration)}`),
        h("div", { class: "row-actions" },
          r.hls || r.mp4 ? h("a", { class: "button", href: `#/replays/${encodeURIComponent(r.id)}`, id: "watch-replay" }, "Watch replay") : null,
          r.mp4 ? h("a", { class: "button secondary", href: r.mp4, download: "" }, "MP4") : null),
        (r.clips || []).length ? h("ul", { class: "clips" }, ...r.clips.map((c) => h("li", {},
          h("a", { href: c.url, target: "_blank", rel: "noopener" }, `${productLabel(products, c.product_id)}`),
          ` at ${fmtDuration(c.start)} for ${fmtDuration(c.duration)}`))) : h("p", { class: "muted" }, "No product clips."))));
  }
  return el;
}
