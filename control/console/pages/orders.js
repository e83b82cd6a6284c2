// Orders: search and filter (state, broadcast, buyer, time), newest first with paging; one
// order's detail with its state history, ship, complete and refund (with a reason).
import { h, $, badge, fmtFen, fmtTime, localToIso, specsText, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { productLabel, productMap } from "../lib/names.js";

const STATES = ["pending_payment", "paid", "shipped", "completed", "cancelled", "refunding", "refunded"];

function query() { return new URLSearchParams((location.hash.split("?")[1]) || ""); }

export async function ordersView(main) {
  const q = query();
  const products = await productMap();
  const body = h("tbody", { id: "orders-body" });
  const more = h("button", { type: "button", class: "secondary", id: "orders-more", hidden: true }, "More");
  const exportBtn = h("button", { type: "button", class: "secondary", id: "orders-export" }, "Export CSV (shown orders)");
  const loaded = [];
  const status = statusLine("orders-status");
  const form = h("form", { id: "orders-filter", class: "grid small", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    if (f.get("order_id")) { location.hash = `#/orders/${encodeURIComponent(String(f.get("order_id")).trim())}`; return; }
    const p = new URLSearchParams();
    for (const k of ["state", "broadcast_id", "user_id", "from", "to"]) if (f.get(k)) p.set(k, f.get(k));
    location.hash = `#/orders?${p}`;
  } },
    h("label", {}, "Order id", h("input", { name: "order_id", maxlength: 64, placeholder: "go straight to one order" })),
    h("label", {}, "State", h("select", { name: "state", value: q.get("state") || "" }, h("option", { value: "" }, "any"), ...STATES.map((s) => h("option", { value: s }, s)))),
    h("label", {}, "Broadcast id", h("input", { name: "broadcast_id", value: q.get("broadcast_id") || "", maxlength: 64 })),
    h("label", {}, "Buyer (user id)", h("input", { name: "user_id", value: q.get("user_id") || "", maxlength: 64 })),
    h("label", {}, "Placed from", h("input", { name: "from", type: "datetime-local", value: q.get("from") || "" })),
    h("label", {}, "Placed before", h("input", { name: "to", type: "datetime-local", value: q.get("to") || "" })),
    h("div", {}, h("button", { type: "submit" }, "Search")));
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, "Orders"), isOperator() ? h("a", { href: "#/payments" }, "Payment notifications") : ""), form, status,
    h("table", {}, h("thead", {}, h("tr", {}, ...["Placed", "Order", "State", "Product", "Qty", "Amount", "Buyer", "Broadcast", "Kind"].map((x) => h("th", {}, x)))), body),
    h("div", { class: "row-actions" }, more, exportBtn)));
  const fromMs = q.get("from") ? Date.parse(localToIso(q.get("from"))) : null;
  let cursor = null;
  let shown = 0;
  const load = async () => {
    const p = new URLSearchParams({ limit: "50" });
    for (const k of ["state", "broadcast_id", "user_id"]) if (q.get(k)) p.set(k, q.get(k));
    if (q.get("to")) p.set("before_ms", String(Date.parse(localToIso(q.get("to")))));
    if (cursor) p.set("cursor", cursor);
    const page = await api("GET", `/api/orders?${p}`);
    let items = page.items || [];
    let done = !page.next_cursor;
    if (fromMs !== null) {
      const kept = items.filter((o) => Date.parse(o.created_at) >= fromMs);
      if (kept.length < items.length) done = true; // newest first: the rest are older still
      items = kept;
    }
    loaded.push(...items);
    for (const o of items) {
      body.append(h("tr", { class: "row", dataset: { order: o.id }, onclick: () => { location.hash = `#/orders/${o.id}`; } },
        h("td", {}, fmtTime(o.created_at)), h("td", { class: "mono" }, o.id.slice(-10)), h("td", {}, badge(o.state)),
        h("td", {}, productLabel(products, o.product_id)), h("td", {}, o.quantity), h("td", {}, fmtFen(o.amount_fen)),
        h("td", { class: "mono" }, o.user_id), h("td", {}, o.broadcast_id ? h("a", { href: `#/b/${o.broadcast_id}` }, `#${o.broadcast_id}`) : "—"),
        h("td", {}, o.kind)));
    }
    shown += items.length;
    cursor = page.next_cursor;
    more.hidden = done;
    status.ok(`${shown} order(s)${done ? "" : ", more below"}`);
    if (!shown) body.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No order matches.")));
  };
  more.addEventListener("click", () => load().catch((e) => status.fail(e)));
  exportBtn.addEventListener("click", () => exportCsv(loaded, products));
  await load().catch((e) => status.fail(e));
}

// The orders on the page as CSV, as the API gave them (recipients masked as in lists).
function exportCsv(orders, products) {
  const cols = ["id", "created_at", "state", "kind", "product", "sku_id", "quantity", "amount_fen", "discount_fen", "user_id", "broadcast_id", "flash_sale_id", "paid_at", "recipient"];
  const cell = (v) => { const t = v === null || v === undefined ? "" : String(v); return /[",\n]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t; };
  const rows = orders.map((o) => cols.map((c) => cell(
    c === "product" ? productLabel(products, o.product_id)
      : c === "recipient" ? (o.recipient ? `${o.recipient.name} ${o.recipient.phone} ${o.recipient.address}` : "")
        : o[c])).join(","));
  const blob = new Blob(["\ufeff" + [cols.join(","), ...rows].join("\r\n")], { type: "text/csv" });
  const a = h("a", { href: URL.createObjectURL(blob), download: `orders-${new Date().toISOString().slice(0, 19)}.csv` });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// Refund: a reason, and the amount: all that is left (the order moves to refunding, then
// refunded), or less (amount_fen: a partial refund, the order keeps its state).
function refundBox(o, status, done) {
  const left = o.amount_fen - (o.refunded_fen || 0);
  return h("form", { id: "refund-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { reason: f.get("reason") || "refund requested" };
    const fen = yuanToFen(f.get("amount"));
    if (fen !== left) body.amount_fen = fen; // partial: the order keeps its state
    if (!confirm(`Refund ${fmtFen(fen)} of order ${o.id}${fen === left ? " (all that is left)" : ""}?`)) return;
    try { await api("POST", `/api/orders/${o.id}/refund`, body); status.ok("Refund: done"); await done(); }
    catch (e) { status.fail(e); }
  } },
    h("label", {}, "Refund reason", h("input", { name: "reason", maxlength: 200, required: true })),
    h("label", {}, `Amount ¥ (up to ${fmtFen(left)})`, h("input", { name: "amount", type: "number", min: 0.01, step: 0.01, max: (left / 100).toFixed(2), value: (left / 100).toFixed(2), class: "narrow-input" })),
    h("button", { type: "submit", class: "danger" }, "Refund"));
}

export async function orderView(main, id) {
  const products = await productMap();
  const status = statusLine("order-status");
  const box = h("div", { id: "order-detail" });
  main.replaceChildren(h("section", { class: "card" }, h("p", {}, h("a", { href: "#/orders" }, "← Orders")), box, status));
  const render = async () => {
    const o = await api("GET", `/api/orders/${encodeURIComponent(id)}`);
    const p = products.get(o.product_id);
    const sku = p?.skus?.find((s) => s.id === o.sku_id);
    const act = (path, label, cls) => h("button", { type: "button", class: cls, dataset: { action: path }, onclick: async () => {
      if (!confirm(`${label} order ${o.id}?`)) return;
      try { await api("POST", `/api/orders/${o.id}/${path}`); status.ok(`${label}: done`); await render(); }
      catch (e) { status.fail(e); }
    } }, label);
    const actions = [];
    let refundForm = null;
    if (isOperator()) {
      if (o.state === "paid") actions.push(act("ship", "Ship", ""));
      if (o.state === "shipped") actions.push(act("complete", "Complete", "secondary"));
      if (["paid", "shipped"].includes(o.state) && (o.refunded_fen || 0) < o.amount_fen) refundForm = refundBox(o, status, render);
      if (o.recipient) actions.push(h("button", { type: "button", class: "secondary", id: "reveal-recipient", onclick: async () => {
        try {
          const r = await api("GET", `/api/orders/${o.id}/recipient`);
          const rc = r.recipient;
          $("#recipient").textContent = rc ? `${rc.name} · ${rc.phone} · ${rc.address}` : "none";
          status.ok("Recipient shown in full (logged)");
        } catch (e) { status.fail(e); }
      } }, "Show full recipient"));
    }
    box.replaceChildren(
      h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `Order ${o.id}`), h("span", { id: "order-state" }, badge(o.state))),
      h("dl", { class: "facts" },
        ...[["Product", `${productLabel(products, o.product_id)}${sku ? ` · ${specsText(sku.specs) || sku.code}` : ""}`],
          ["Quantity", o.quantity], ["Unit price", fmtFen(o.unit_price_fen)], ["Discount", fmtFen(o.discount_fen)],
          ["Amount", fmtFen(o.amount_fen)], ["Refunded", h("span", { id: "refunded" }, fmtFen(o.refunded_fen || 0))], ["Kind", o.kind + (o.flash_sale_id ? ` (flash sale #${o.flash_sale_id})` : "")],
          ["Buyer", o.user_id], ["Broadcast", o.broadcast_id ? `#${o.broadcast_id}` : "—"], ["Card", o.card_id ?? "—"],
          ["Channel", o.channel || "—"], ["Placed", fmtTime(o.created_at)], ["Pay before", fmtTime(o.pay_before)],
          ["Paid", fmtTime(o.paid_at)], ["Transaction", o.transaction_id || "—"], ["Coupon", o.coupon_id || "—"],
          ["Recipient", h("span", { id: "recipient" }, o.recipient ? `${o.recipient.name} · ${o.recipient.phone} · ${o.recipient.address}` : "—")]]
          .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("div", { class: "row-actions" }, ...actions), refundForm ?? "",
      (o.refunds || []).length ? h("div", {}, h("h3", {}, "Refunds"),
        table(["Asked", "Amount", "Reason", "By", "State", "Done"], o.refunds.map((r) => h("tr", {},
          h("td", {}, fmtTime(r.created_at)), h("td", {}, fmtFen(r.amount_fen) + (r.full ? " (the rest)" : "")), h("td", {}, r.reason),
          h("td", {}, r.actor), h("td", {}, badge(r.state)), h("td", {}, fmtTime(r.done_at)))), "", { id: "refunds" })) : "",
      h("h3", {}, "State history"),
      table(["When", "From", "To", "By", "Reason"], (o.history || []).map((t) => h("tr", {},
        h("td", {}, fmtTime(new Date(t.at_ms ?? Date.parse(t.at)).toISOString())), h("td", {}, t.from_state ?? t.from ?? "—"),
        h("td", {}, badge(t.to_state ?? t.to)), h("td", {}, t.actor), h("td", {}, t.reason || ""))), "No history.", { id: "order-history" }));
  };
  await render();
}
