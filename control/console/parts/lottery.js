// Start a lottery in the broadcast's room (entry by keyword or button, timed or instant;
// entry after N s of watching, only those present at the draw, a background image; prizes
// of kind product (SKU), coupon, voucher or manual, each with an image), then draw it. Every outcome, errors included, goes to the form's status line.
import { h, statusLine } from "../lib/dom.js";
import { api } from "../lib/api.js";

export function lotteryCard(getB) {
  const status = statusLine("lottery-status");
  const keywordField = h("label", { id: "keyword-field" }, "Keyword viewers comment to enter", h("input", { name: "keyword", maxlength: 50, value: "我要抽奖" }));
  const probField = h("label", { hidden: true }, "Win probability (instant)", h("input", { name: "probability", type: "number", min: 0, max: 1, step: 0.01, value: 0.1 }));
  const presentField = h("label", { class: "check" }, h("input", { name: "present_at_draw", type: "checkbox" }), " Only viewers still in the room at the draw");
  const drawBtn = (lid) => h("button", { type: "button", id: "lottery-draw", onclick: async () => {
    try {
      const r = await api("POST", `/api/danmaku/lotteries/${encodeURIComponent(lid)}/draw`);
      const ws = (r.winners || []).map((w) => `${w.nick || w.user_id} (${w.prize?.name ?? w.prize})`);
      status.ok(`Lottery ${lid} drawn: ${ws.length ? ws.join(", ") : "no entrants"}. `);
      status.append(h("a", { href: `#/b/${getB().id}/lotteries` }, "verify"));
    } catch (e) { status.fail(e); }
  } }, "Draw now");
  // prizes: one row each (name, winners, kind and what the kind needs, an image)
  const prizeRows = h("div", { id: "prize-rows" });
  const prizeRow = () => {
    const kind = h("select", { name: "kind", onchange: () => sync() },
      h("option", { value: "product" }, "product (a SKU, shipped)"), h("option", { value: "coupon" }, "coupon"),
      h("option", { value: "voucher" }, "offline voucher (code)"), h("option", { value: "manual" }, "manual (operators hand it out)"));
    const sku = h("label", { class: "for-product" }, "SKU (id or code)", h("input", { name: "sku", maxlength: 64 }));
    const coupon = h("label", { class: "for-coupon", hidden: true }, "Coupon value ¥", h("input", { name: "coupon", type: "number", min: 0.01, step: 0.01 }));
    const row = h("fieldset", { class: "prize grid small" },
      h("label", {}, "Prize", h("input", { name: "prize", required: true, maxlength: 100 })),
      h("label", {}, "Winners", h("input", { name: "stock", type: "number", min: 1, max: 1000, value: 1, required: true })),
      h("label", {}, "Kind", kind), sku, coupon,
      h("label", {}, "Prize image URL (https:// or /path, optional)", h("input", { name: "image_url", maxlength: 500 })),
      h("div", {}, h("button", { type: "button", class: "secondary remove-prize", onclick: () => { if (prizeRows.children.length > 1) row.remove(); } }, "Remove prize")));
    const sync = () => { sku.hidden = kind.value !== "product"; coupon.hidden = kind.value !== "coupon";
      sku.querySelector("input").required = kind.value === "product"; coupon.querySelector("input").required = kind.value === "coupon"; };
    sync();
    return row;
  };
  prizeRows.append(prizeRow());
  const prizesOf = () => [...prizeRows.children].map((row) => {
    const v = (n) => row.querySelector(`[name=${n}]`).value.trim();
    const p = { name: v("prize"), stock: Number(v("stock")), kind: v("kind") };
    if (p.kind === "product") p.sku = v("sku");
    if (p.kind === "coupon") p.coupon = Math.round(Number(v("coupon")) * 100);
    if (v("image_url")) p.image_url = v("image_url");
    return p;
  });
  const submit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { room: `${getB().app}/${getB().stream}`, title: f.get("title"), prizes: prizesOf(),
      entry: f.get("entry"), window_s: Number(f.get("window_s")), mode: f.get("mode") };
    if (body.entry === "keyword") body.keyword = f.get("keyword");
    if (body.mode === "instant") body.probability = Number(f.get("probability"));
    if (Number(f.get("min_watch_s"))) body.min_watch_s = Number(f.get("min_watch_s"));
    if (body.mode === "timed" && f.get("present_at_draw")) body.present_at_draw = true;
    if (f.get("background_url")) body.background_url = f.get("background_url");
    status.clear();
    try {
      const lot = await api("POST", "/api/danmaku/lotteries", body);
      const lid = lot.lottery_id;
      status.ok(`Lottery ${lid} open${body.entry === "keyword" ? ` (comment “${lot.keyword ?? body.keyword}” to enter)` : ""}. `);
      if (body.mode === "timed") status.append(drawBtn(lid), " ");
      status.append(h("button", { type: "button", class: "secondary", id: "lottery-cancel", onclick: async () => {
        if (!confirm(`Cancel lottery ${lid}? Nobody wins.`)) return;
        try { await api("POST", `/api/danmaku/lotteries/${encodeURIComponent(lid)}/cancel`); status.ok(`Lottery ${lid} cancelled`); }
        catch (e) { status.fail(e); }
      } }, "Cancel lottery"));
    } catch (e) { status.fail(e); }
  };
  const form = h("form", { id: "lottery-form", onsubmit: submit },
    h("div", { class: "grid small" },
      h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 100, value: "Lucky draw" })),
      h("label", {}, "Entry", h("select", { name: "entry", onchange: (e) => { keywordField.hidden = e.target.value !== "keyword"; } },
        h("option", { value: "keyword" }, "comment a keyword"), h("option", { value: "button" }, "tap a button"))),
      keywordField,
      h("label", {}, "Mode", h("select", { name: "mode", onchange: (e) => { probField.hidden = e.target.value !== "instant"; presentField.hidden = e.target.value !== "timed"; } },
        h("option", { value: "timed" }, "timed: draw at the end"), h("option", { value: "instant" }, "instant: each entry may win"))),
      probField,
      h("label", {}, "Window (s)", h("input", { name: "window_s", type: "number", min: 1, max: 3600, value: 60 })),
      h("label", {}, "Entry after watching (s, 0: at once)", h("input", { name: "min_watch_s", type: "number", min: 0, max: 3600, value: 0 })),
      presentField,
      h("label", {}, "Background image URL (https:// or /path, optional)", h("input", { name: "background_url", maxlength: 500 }))),
    h("h4", {}, "Prizes (the first winners get the first prize)"), prizeRows,
    h("div", { class: "row-actions" },
      h("button", { type: "button", class: "secondary", id: "add-prize", onclick: () => prizeRows.append(prizeRow()) }, "Add a prize"),
      h("button", { type: "submit" }, "Start lottery")));
  return h("section", { class: "card", id: "lottery-card" }, h("h3", {}, "Lottery"), form, status);
}
