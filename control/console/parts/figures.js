// The live figures of a broadcast (GET /api/broadcasts/{id}/stats), updated in place.
import { h, fmtBits, fmtDuration, fmtFen } from "../lib/dom.js";

const FIGURES = [["viewers", "viewers"], ["bitrate_in", "bitrate in"], ["bitrate_out", "bitrate out"], ["fps", "fps"],
  ["comments_per_s", "comments/s"], ["likes", "likes"], ["orders", "orders"], ["gmv", "GMV"]];

export function figuresCard() {
  const el = h("section", { class: "card", id: "dashboard" }, h("h3", {}, "Live"),
    h("div", { class: "figures" }, ...FIGURES.map(([k, label]) => h("div", { class: "figure" }, h("b", { id: `fig-${k}` }, "—"), h("span", {}, label)))),
    h("p", { class: "muted", id: "fig-viewers-detail" }));
  // this card's own elements: a poll answered after the page changed writes nowhere else
  const $ = (sel) => el.querySelector(sel);
  const update = (s) => {
    $("#fig-viewers").textContent = s.viewers_total ?? 0;
    $("#fig-viewers-detail").textContent = [
      ...Object.entries(s.viewers || {}).map(([k, v]) => `${k} ${v}`),
      s.uptime ? `uptime ${fmtDuration(s.uptime)}` : null,
      s.video ? `${s.video.codec ?? ""} ${s.video.width ?? ""}×${s.video.height ?? ""}` : null,
    ].filter(Boolean).join(" · ");
    $("#fig-bitrate_in").textContent = fmtBits(s.bitrate_in);
    $("#fig-bitrate_out").textContent = fmtBits(s.bitrate_out);
    $("#fig-fps").textContent = s.fps ?? "—";
    $("#fig-comments_per_s").textContent = s.comments_per_s ?? 0;
    $("#fig-likes").textContent = s.likes ?? 0;
    $("#fig-orders").textContent = s.orders ?? 0;
    $("#fig-gmv").textContent = fmtFen(s.gmv_fen ?? 0);
  };
  return { el, update };
}
