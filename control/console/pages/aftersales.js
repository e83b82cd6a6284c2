// After-sales (售后): buyers' refund requests (GET /api/aftersales). The open queue by default,
// oldest first: each with its order, the buyer (user id and the order's masked recipient, as
// other order views show it), kind, reason and the buyer's words, the amount asked (of what
// was paid and refunded so far); approve (the amount can be amended: the refund goes through
// the order's refund path) or reject with a reason the buyer sees. Other states and one
// broadcast's requests through the filter. docs/shop.md "After-sales", docs/console.md.
import { h, badge, fmtFen, fmtTime, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { productLabel, productMap } from "../lib/names.js";

const STATES = ["open", "approved", "refunded", "rejected", "withdrawn"];
const KINDS = { refund_only: "refund only", return_refund: "return + refund" };
const REASONS = {
  not_as_described: "not as described", damaged: "damaged", wrong_item: "wrong item",
  no_longer_wanted: "no longer wanted", other: "other",
};

function buyer(r) {
  const rc = r.order?.recipient;
  return h("span", {}, h("span", { class: "mono" }, r.user_id),
    rc ? h("span", { class: "muted recipient" }, ` · ${rc.name} ${rc.phone}`) : "");
}

export async function aftersalesView(main) {
  const products = await productMap();
  const status = statusLine("aftersales-status");
  const list = h("div", { id: "aftersales-list" });
  let shown = { state: "open", broadcast: "" };

  const decide = (r) => {
    if (r.state !== "open") return h("span", { class: "muted" }, r.state === "rejected" ? `rejected: ${r.note}` : r.note || "—");
    const left = r.order.amount_fen - (r.order.refunded_fen || 0);
    const amount = h("input", { name: "amount", type: "number", min: 0.01, step: 0.01, max: (left / 100).toFixed(2), value: (r.amount_fen / 100).toFixed(2), class: "narrow-input", "aria-label": "amount ¥" });
    const why = h("input", { name: "reason", maxlength: 200, placeholder: "reason (to reject)", "aria-label": "rejection reason" });
    const approve = h("button", { type: "button", class: "approve", onclick: async () => {
      const fen = yuanToFen(amount.value);
      if (!(fen > 0)) { status.fail({ message: "the amount must be above zero", code: "invalid_field" }); return; }
      if (!confirm(`Refund ${fmtFen(fen)} of order ${r.order_id} to ${r.user_id}?`)) return;
      try {
        const done = await api("POST", `/api/aftersales/${r.id}/approve`, fen === r.amount_fen ? {} : { amount_fen: fen });
        status.ok(`Request ${r.id.slice(-8)} approved: ${fmtFen(done.approved_fen)} refunded through order ${r.order_id} (${done.state}).`);
        await show();
      } catch (e) { status.fail(e); }
    } }, "Approve");
    const reject = h("button", { type: "button", class: "reject danger", onclick: async () => {
      const reason = why.value.trim();
      if (!reason) { why.focus(); status.fail({ message: "say why the request is rejected (the buyer sees it)", code: "invalid_field" }); return; }
      try {
        await api("POST", `/api/aftersales/${r.id}/reject`, { reason });
        status.ok(`Request ${r.id.slice(-8)} rejected.`);
        await show();
      } catch (e) { status.fail(e); }
    } }, "Reject");
    return h("div", { class: "row-actions decide" }, amount, approve, why, reject);
  };

  const show = async (f = shown) => {
    shown = f;
    const q = new URLSearchParams({ limit: "200" });
    if (f.state) q.set("state", f.state);
    if (f.broadcast) q.set("broadcast_id", f.broadcast);
    const r = await api("GET", `/api/aftersales?${q}`);
    const title = f.state === "open" ? "Open requests (oldest first)" : `Requests${f.state ? `: ${f.state}` : ""}`;
    list.replaceChildren(h("h3", {}, f.broadcast ? `${title}, broadcast #${f.broadcast}` : title),
      table(["Asked", "Order", "Buyer", "Kind", "Reason", "Amount", "State", "Decision"], r.items.map((x) => h("tr", { dataset: { request: x.id, order: x.order_id, state: x.state } },
        h("td", {}, fmtTime(x.created_at)),
        h("td", {}, h("a", { class: "mono order", href: `#/orders/${x.order_id}` }, x.order_id.slice(-10)),
          h("div", { class: "muted" }, `${productLabel(products, x.order.product_id)} × ${x.order.quantity} · ${x.order.state}`)),
        h("td", { class: "buyer" }, buyer(x)),
        h("td", {}, KINDS[x.kind] || x.kind),
        h("td", { class: "reason" }, REASONS[x.reason] || x.reason, x.text ? h("div", { class: "muted" }, `“${x.text}”`) : ""),
        h("td", { class: "amount" }, fmtFen(x.amount_fen),
          h("div", { class: "muted" }, `paid ${fmtFen(x.order.amount_fen)}${x.order.refunded_fen ? `, refunded ${fmtFen(x.order.refunded_fen)}` : ""}`),
          x.approved_fen !== null && x.approved_fen !== x.amount_fen ? h("div", {}, `approved ${fmtFen(x.approved_fen)}`) : ""),
        h("td", { class: "state" }, badge(x.state)),
        h("td", {}, decide(x)))),
      f.state === "open" ? "No open request: nothing to decide." : "No request matches."));
  };

  const form = h("form", { id: "aftersales-filter", class: "row-actions", onsubmit: (ev) => {
    ev.preventDefault(); status.clear();
    const d = new FormData(ev.target);
    show({ state: String(d.get("state") || ""), broadcast: String(d.get("broadcast") || "").trim() }).catch((e) => status.fail(e));
  } },
    h("select", { name: "state" }, ...STATES.map((s) => h("option", { value: s, selected: s === "open" }, s)), h("option", { value: "" }, "any state")),
    h("input", { name: "broadcast", placeholder: "broadcast id", inputmode: "numeric", pattern: "[0-9]*", maxlength: 16 }),
    h("button", { type: "submit", class: "secondary" }, "Show"));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "After-sales"),
    h("p", { class: "muted" }, "Buyers ask for refunds from the viewer page. Approving refunds the amount through the order (whole: the order is refunded; less: a partial refund); rejecting needs a reason, which the buyer sees."),
    form, status, list));
  await show().catch((e) => status.fail(e));
}
