// Payment notifications from the provider: every one that passed its signature, with its
// outcome (accepted, duplicate, late, wrong amount...), and the refused ones (forged,
// stale) counted since the start with the last few.
import { h, badge, fmtTime, table } from "../lib/dom.js";
import { api } from "../lib/api.js";

export async function paymentsView(main) {
  const r = await api("GET", "/api/shop/payments/notifications?limit=200");
  const refused = r.refused || { counts: {}, recent: [] };
  main.replaceChildren(
    h("section", { class: "card" }, h("p", {}, h("a", { href: "#/orders" }, "← Orders")), h("h2", {}, "Payment notifications"),
      table(["Received", "Order", "Transaction", "Outcome", "Detail", "From"], (r.items || []).map((n) => h("tr", {},
        h("td", {}, fmtTime(new Date(n.received_ms).toISOString())),
        h("td", { class: "mono" }, n.order_id ? h("a", { href: `#/orders/${n.order_id}` }, n.order_id.slice(-10)) : "—"),
        h("td", { class: "mono" }, n.transaction_id || "—"), h("td", {}, badge(n.outcome)), h("td", {}, n.detail || ""),
        h("td", { class: "mono" }, n.remote || ""))), "No notification yet.", { id: "notifications" })),
    h("section", { class: "card" }, h("h3", {}, "Refused (bad signature, stale timestamp)"),
      h("p", { id: "refused-counts" }, Object.entries(refused.counts).map(([k, v]) => `${k}: ${v}`).join(" · ") || "none since the server started"),
      table(["When", "Why", "From"], (refused.recent || []).map((x) => h("tr", {},
        h("td", {}, x.received_ms ? fmtTime(new Date(x.received_ms).toISOString()) : "—"), h("td", {}, `${x.outcome} ${x.detail || ""}`), h("td", { class: "mono" }, x.remote || ""))), "None.")));
}
