// A broadcast's lotteries (GET /api/danmaku/lotteries?room=), each with its state, entrants,
// winners and prizes, and the draw checked in the browser from the published audit data.
import { h, badge, fmtTime, statusLine, table } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { verifyLottery } from "../lib/verify.js";
import { broadcastTabs } from "./broadcast.js";

export async function lotteriesView(main, id) {
  const b = await api("GET", `/api/broadcasts/${id}`);
  const room = `${b.app}/${b.stream}`;
  const status = statusLine("lotteries-status");
  const list = h("div", { id: "lotteries" });
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}: lotteries`), badge(b.state)),
    broadcastTabs(b, "lotteries"), status, list));
  const listed = await api("GET", `/api/danmaku/lotteries?room=${encodeURIComponent(room)}&limit=500`);
  const created = new Map(listed.items.map((x) => [x.lottery_id, x]));
  if (!created.size) { list.replaceChildren(h("p", { class: "muted" }, "No lottery in this room yet.")); return; }
  const boxes = [];
  for (const [lid, entry] of created) {
    let lot;
    try { lot = await api("GET", `/api/danmaku/lotteries/${encodeURIComponent(lid)}?entrants=1`); }
    catch (e) { boxes.push(h("article", { class: "lottery" }, h("p", { class: "error" }, `${lid}: ${e.message}`))); continue; }
    const verdict = h("p", { class: "verdict muted" }, lot.seed ? "Checking…" : "Not drawn yet: the seed is revealed at the draw.");
    if (lot.seed) {
      verifyLottery(lot).then((v) => {
        verdict.className = `verdict ${v.ok ? "ok" : "error"}`;
        verdict.textContent = v.ok ? `Verified: the seed matches its commitment${lot.mode === "timed" ? ", the entrants their hash" : ""}, and the winners recomputed from them are the winners announced.` : `NOT verified: ${v.problems.join("; ")}`;
      });
    }
    boxes.push(h("article", { class: "lottery", dataset: { lottery: lid } },
      h("div", { class: "row-actions" }, h("h4", { class: "grow" }, `${lot.title || "Lottery"} `, h("span", { class: "muted mono" }, lid)), badge(lot.state)),
      h("p", { class: "muted" }, `Opened ${fmtTime(entry.created_at)} by ${entry.created_by} · ${lot.entry === "keyword" ? `keyword “${lot.keyword}”` : "button"} · ${lot.mode}${lot.mode === "instant" ? ` p=${lot.probability}` : ""} · ${lot.entrant_count ?? (lot.entrants || []).length} entrant(s) · window until ${fmtTime(lot.window_end)}`),
      h("p", { class: "rules" }, [lot.min_watch_s ? `entry after ${lot.min_watch_s} s of watching` : "entry at once",
        lot.present_at_draw ? "only those present at the draw" : null, lot.background_url ? "background image" : null].filter(Boolean).join(" · "),
        lot.background_url ? h("a", { href: lot.background_url, target: "_blank", rel: "noopener" }, " (open)") : null),
      h("div", { class: "prizes" }, "Prizes: ", ...(lot.prizes || []).map((p) => h("span", { class: "prize" },
        p.image_url ? h("img", { src: p.image_url, alt: "", class: "prize-img", width: 32, height: 32 }) : null,
        `${p.name} ×${p.stock} · ${p.kind || (p.sku ? "product" : p.coupon ? "coupon" : "manual")}${p.sku ? ` SKU ${p.sku}` : ""}${p.coupon ? ` coupon ${typeof p.coupon === "number" ? `¥${(p.coupon / 100).toFixed(2)}` : p.coupon}` : ""} `))),
      table(["#", "Winner", "Prize"], (lot.winners || []).map((w, i) => h("tr", {}, h("td", {}, i + 1), h("td", {}, `${w.nick || ""} `, h("a", { class: "mono", href: `#/prizes?user=${encodeURIComponent(w.user_id)}`, title: "their prizes" }, w.user_id)), h("td", {}, w.prize?.name ?? w.prize ?? ""))), "No winner yet."),
      h("details", {}, h("summary", {}, "Audit data"), h("dl", { class: "facts mono" },
        ...[["commitment", lot.commitment], ["seed", lot.seed || "(secret until the draw)"], ["entrants hash", lot.entrants_hash || "—"]].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      verdict));
  }
  list.replaceChildren(...boxes);
  status.ok(`${created.size} lotter${created.size === 1 ? "y" : "ies"}`);
}
