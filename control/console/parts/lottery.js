// Start a lottery in the broadcast's room (entry by keyword or button, timed or instant),
// then draw it. Every outcome, errors included, goes to the form's status line.
import { h, statusLine } from "../lib/dom.js";
import { api } from "../lib/api.js";

export function lotteryCard(getB) {
  const status = statusLine("lottery-status");
  const keywordField = h("label", { id: "keyword-field" }, "Keyword viewers comment to enter", h("input", { name: "keyword", maxlength: 50, value: "我要抽奖" }));
  const probField = h("label", { hidden: true }, "Win probability (instant)", h("input", { name: "probability", type: "number", min: 0, max: 1, step: 0.01, value: 0.1 }));
  const drawBtn = (lid) => h("button", { type: "button", id: "lottery-draw", onclick: async () => {
    try {
      const r = await api("POST", `/api/danmaku/lotteries/${encodeURIComponent(lid)}/draw`);
      const ws = (r.winners || []).map((w) => `${w.nick || w.user_id} (${w.prize?.name ?? w.prize})`);
      status.ok(`Lottery ${lid} drawn: ${ws.length ? ws.join(", ") : "no entrants"}. `);
      status.append(h("a", { href: `#/b/${getB().id}/lotteries` }, "verify"));
    } catch (e) { status.fail(e); }
  } }, "Draw now");
  const submit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const prize = { name: f.get("prize"), stock: Number(f.get("stock")) };
    if (f.get("sku")) prize.sku = f.get("sku");
    if (f.get("coupon")) prize.coupon = Math.round(Number(f.get("coupon")) * 100);
    const body = { room: `${getB().app}/${getB().stream}`, title: f.get("title"), prizes: [prize],
      entry: f.get("entry"), window_s: Number(f.get("window_s")), mode: f.get("mode") };
    if (body.entry === "keyword") body.keyword = f.get("keyword");
    if (body.mode === "instant") body.probability = Number(f.get("probability"));
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
      h("label", {}, "Prize", h("input", { name: "prize", required: true, maxlength: 100 })),
      h("label", {}, "Winners", h("input", { name: "stock", type: "number", min: 1, max: 1000, value: 1 })),
      h("label", {}, "Prize SKU (id or code, optional)", h("input", { name: "sku", maxlength: 64 })),
      h("label", {}, "or coupon value ¥ (optional)", h("input", { name: "coupon", type: "number", min: 0, step: 0.01 })),
      h("label", {}, "Entry", h("select", { name: "entry", onchange: (e) => { keywordField.hidden = e.target.value !== "keyword"; } },
        h("option", { value: "keyword" }, "comment a keyword"), h("option", { value: "button" }, "tap a button"))),
      keywordField,
      h("label", {}, "Mode", h("select", { name: "mode", onchange: (e) => { probField.hidden = e.target.value !== "instant"; } },
        h("option", { value: "timed" }, "timed: draw at the end"), h("option", { value: "instant" }, "instant: each entry may win"))),
      probField,
      h("label", {}, "Window (s)", h("input", { name: "window_s", type: "number", min: 1, max: 3600, value: 60 }))),
    h("button", { type: "submit" }, "Start lottery"));
  return h("section", { class: "card", id: "lottery-card" }, h("h3", {}, "Lottery"), form, status);
}
