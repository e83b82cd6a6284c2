// The shop's blocklist (abuse control): accounts, devices and IP addresses refused for
// buying and lottery entry, with a reason and an optional expiry.
import { h, fmtTime, statusLine, table } from "../lib/dom.js";
import { api } from "../lib/api.js";

const KINDS = ["user", "device", "ip"];

export async function blocklistView(main) {
  const status = statusLine("blocklist-status");
  const list = h("div", { id: "blocklist" });
  const refresh = async () => {
    const r = await api("GET", "/api/shop/blocklist?limit=500");
    list.replaceChildren(table(["Kind", "Value", "Reason", "Since", "By", "Until", ""], (r.items || []).map((x) => h("tr", { dataset: { value: x.value } },
      h("td", {}, x.kind), h("td", { class: "mono" }, x.value), h("td", {}, x.reason || ""), h("td", {}, fmtTime(x.created_at)),
      h("td", {}, x.created_by || "—"), h("td", {}, x.expires_at ? fmtTime(x.expires_at) : "no end"),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: async () => {
        try { await api("DELETE", `/api/shop/blocklist/${x.kind}/${encodeURIComponent(x.value)}`); status.ok(`${x.kind} ${x.value} unblocked`); await refresh(); } catch (e) { status.fail(e); }
      } }, "Unblock")))), "Nobody is blocked."));
  };
  const form = h("form", { id: "block-form", class: "grid small", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { kind: f.get("kind"), value: f.get("value"), reason: f.get("reason") || "" };
    if (Number(f.get("hours")) > 0) body.ttl_s = Math.round(Number(f.get("hours")) * 3600);
    try { await api("POST", "/api/shop/blocklist", body); status.ok(`${body.kind} ${body.value} blocked`); ev.target.reset(); await refresh(); }
    catch (e) { status.fail(e); }
  } },
    h("label", {}, "Kind", h("select", { name: "kind" }, ...KINDS.map((k) => h("option", { value: k }, k)))),
    h("label", {}, "Value (user id, device id, IP)", h("input", { name: "value", required: true, maxlength: 128 })),
    h("label", {}, "Reason", h("input", { name: "reason", maxlength: 200 })),
    h("label", {}, "For hours (empty: no end)", h("input", { name: "hours", type: "number", min: 0, step: 0.5 })),
    h("div", {}, h("button", { type: "submit", class: "danger" }, "Block")));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Blocklist"),
    h("p", { class: "muted" }, "Blocked accounts, devices and addresses cannot buy or enter lotteries (403 blocked); rate limits answer 429 on their own."),
    list, h("h3", {}, "Block"), form, status));
  await refresh();
}
