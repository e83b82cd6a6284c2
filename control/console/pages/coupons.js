// Coupons: a buyer's coupons (value, source, used by which order), and granting one
// (through the prize-grant API: the shop has no direct coupon creation yet).
import { h, fmtFen, fmtTime, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";

export async function couponsView(main) {
  const status = statusLine("coupons-status");
  const list = h("div", { id: "coupons-list" });
  const show = async (uid) => {
    const r = await api("GET", `/api/users/${encodeURIComponent(uid)}/coupons?limit=200`);
    list.replaceChildren(h("h3", {}, `Coupons of ${uid}`), table(["Coupon", "Value", "From", "Broadcast", "Granted", "Used by"], r.items.map((c) => h("tr", {},
      h("td", { class: "mono" }, c.id), h("td", {}, c.value_fen ? fmtFen(c.value_fen) : "code"), h("td", {}, c.source),
      h("td", {}, c.broadcast_id || "—"), h("td", {}, fmtTime(new Date(c.created_ms).toISOString())),
      h("td", {}, c.used_order_id ? h("a", { href: `#/orders/${c.used_order_id}` }, c.used_order_id.slice(-10)) : "unused"))), "This buyer has no coupon."));
  };
  const lookup = h("form", { class: "row-actions", onsubmit: (ev) => { ev.preventDefault(); show(new FormData(ev.target).get("uid")).catch((e) => status.fail(e)); } },
    h("input", { name: "uid", placeholder: "buyer's user id", required: true, maxlength: 64 }), h("button", { type: "submit" }, "Show coupons"));
  const grant = h("form", { id: "coupon-grant", class: "grid small", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const uid = f.get("user_id");
    const body = { lottery_id: `console-${Date.now().toString(36)}`, user_id: uid, prize: { name: f.get("name"), stock: 1, value_fen: yuanToFen(f.get("value")) } };
    if (f.get("broadcast_id")) body.broadcast_id = f.get("broadcast_id");
    try { await api("POST", "/api/lottery/prizes", body); status.ok(`Coupon granted to ${uid}`); await show(uid); }
    catch (e) { status.fail(e); }
  } },
    h("label", {}, "Buyer (user id)", h("input", { name: "user_id", required: true, maxlength: 64 })),
    h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 100, value: "¥10 off" })),
    h("label", {}, "Value ¥", h("input", { name: "value", type: "number", min: 0.01, step: 0.01, required: true, value: 10 })),
    h("label", {}, "Broadcast id (optional)", h("input", { name: "broadcast_id", maxlength: 64 })),
    h("div", {}, h("button", { type: "submit" }, "Grant coupon")));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Coupons"), lookup, status, list),
    isOperator() ? h("section", { class: "card" }, h("h3", {}, "Grant a coupon"), grant) : "");
}
