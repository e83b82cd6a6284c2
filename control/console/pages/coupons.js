// Coupons: a buyer's coupons (value, source, used by which order), and giving coupons to
// one buyer or to a list of buyers at once (POST /api/coupons, idempotent per submission).
import { h, fmtFen, fmtTime, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { randomKey } from "../lib/ids.js";

export async function couponsView(main) {
  const status = statusLine("coupons-status");
  const list = h("div", { id: "coupons-list" });
  const show = async (uid) => {
    const r = await api("GET", `/api/users/${encodeURIComponent(uid)}/coupons?limit=200`);
    list.replaceChildren(h("h3", {}, `Coupons of ${uid}`), table(["Coupon", "Value", "From", "Broadcast", "Given", "Used by"], r.items.map((c) => h("tr", {},
      h("td", { class: "mono" }, c.id), h("td", {}, c.value_fen ? fmtFen(c.value_fen) : "code"), h("td", {}, c.source),
      h("td", {}, c.broadcast_id || "—"), h("td", {}, fmtTime(c.created_at ?? new Date(c.created_ms).toISOString())),
      h("td", {}, c.used_order_id ? h("a", { href: `#/orders/${c.used_order_id}` }, c.used_order_id.slice(-10)) : "unused"))), "This buyer has no coupon."));
  };
  const lookup = h("form", { class: "row-actions", onsubmit: (ev) => { ev.preventDefault(); show(new FormData(ev.target).get("uid")).catch((e) => status.fail(e)); } },
    h("input", { name: "uid", placeholder: "buyer's user id", required: true, maxlength: 64 }), h("button", { type: "submit" }, "Show coupons"));
  let key = randomKey(); // one per submission: a double click gives once
  const give = h("form", { id: "coupon-grant", class: "grid small", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const users = String(f.get("user_id")).split(/[\s,]+/).filter(Boolean);
    const body = { value_fen: yuanToFen(f.get("value")), note: f.get("note") || "", idempotency_key: key };
    if (users.length === 1) body.user_id = users[0]; else body.user_ids = users;
    if (f.get("broadcast_id")) body.broadcast_id = Number(f.get("broadcast_id"));
    try {
      const r = await api("POST", "/api/coupons", body);
      key = randomKey();
      status.ok(`${r.items.length} coupon(s) of ${fmtFen(body.value_fen)} given${r.created ? "" : " already (the same submission)"}`);
      await show(users[0]);
    } catch (e) { status.fail(e); }
  } },
    h("label", {}, "Buyers (user ids, comma or space separated)", h("input", { name: "user_id", required: true, maxlength: 20000 })),
    h("label", {}, "Value ¥", h("input", { name: "value", type: "number", min: 0.01, step: 0.01, required: true, value: 10 })),
    h("label", {}, "Note", h("input", { name: "note", maxlength: 120, value: "" })),
    h("label", {}, "Broadcast id (optional)", h("input", { name: "broadcast_id", type: "number", min: 1 })),
    h("div", {}, h("button", { type: "submit" }, "Give coupons")));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Coupons"), lookup, status, list),
    isOperator() ? h("section", { class: "card" }, h("h3", {}, "Give coupons"), give) : "");
}
