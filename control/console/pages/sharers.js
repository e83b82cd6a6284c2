// Sharers (分享员): registered sharers (register, deactivate), and per broadcast their
// share links and sales (orders credited by first or last touch within the window).
import { h, badge, fmtFen, fmtTime, statusLine, table } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { broadcastTabs } from "./broadcast.js";

export async function sharersView(main) {
  const status = statusLine("sharers-status");
  const list = h("div", { id: "sharers" });
  const refresh = async () => {
    const r = await api("GET", "/api/sharers?limit=500");
    list.replaceChildren(table(["Sharer (user id)", "Name", "State", "Since", "By", ""], (r.items || []).map((s) => h("tr", { dataset: { sharer: s.user_id } },
      h("td", { class: "mono" }, s.user_id), h("td", {}, s.name || "—"), h("td", {}, badge(s.active ? "active" : "disabled")),
      h("td", {}, fmtTime(s.created_at)), h("td", {}, s.created_by || "—"),
      h("td", {}, s.active ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Deactivate sharer ${s.user_id}? Their links credit nobody from now on.`)) return;
        try { await api("DELETE", `/api/sharers/${encodeURIComponent(s.user_id)}`); status.ok(`${s.user_id} deactivated`); await refresh(); } catch (e) { status.fail(e); }
      } }, "Deactivate") : ""))), "No sharer yet."));
  };
  const form = h("form", { id: "sharer-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try { await api("POST", "/api/sharers", { user_id: f.get("user_id"), name: f.get("name") || "" }); status.ok(`${f.get("user_id")} registered`); ev.target.reset(); await refresh(); }
    catch (e) { status.fail(e); }
  } },
    h("input", { name: "user_id", required: true, maxlength: 64, placeholder: "the sharer's user id" }),
    h("input", { name: "name", maxlength: 64, placeholder: "name" }),
    h("button", { type: "submit" }, "Register sharer"));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Sharers (分享员)"),
    h("p", { class: "muted" }, "A sharer's link credits the orders of viewers who arrive through it; see each broadcast's Sharers tab."),
    list, isOperator() ? form : "", status));
  await refresh();
}

export async function broadcastSharersView(main, id) {
  const b = await api("GET", `/api/broadcasts/${id}`);
  const status = statusLine("share-status");
  const sales = h("div", { id: "sharer-sales" });
  const link = h("div", { id: "share-link" });
  const refresh = async () => {
    const r = await api("GET", `/api/broadcasts/${id}/sharers`);
    sales.replaceChildren(h("p", { class: "muted" }, `Credited by ${r.attribution} touch within ${Math.round(r.window_s / 60)} min of arriving.`),
      table(["Sharer", "Visits", "Orders", "Buyers", "Units", "Paid", "Refunded", "GMV"], (r.items || []).map((s) => h("tr", { dataset: { sharer: s.sharer_id } },
        h("td", {}, s.name || s.sharer_id, " ", h("span", { class: "mono muted" }, s.sharer_id)), h("td", { class: "visits", title: "viewers who arrived through their link, once per browser and viewer" }, s.visits ?? 0), h("td", {}, s.orders), h("td", {}, s.buyers),
        h("td", {}, s.units), h("td", {}, fmtFen(s.paid_fen)), h("td", {}, fmtFen(s.refunded_fen)), h("td", {}, h("b", {}, fmtFen(s.gmv_fen))))), "No visit or order through a sharer's link yet."));
  };
  const form = h("form", { id: "share-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const l = await api("POST", `/api/broadcasts/${id}/share-links`, { sharer_id: new FormData(ev.target).get("sharer_id") });
      link.replaceChildren(h("label", {}, `Share link of ${l.sharer_id} (valid until ${fmtTime(l.expires_at)})`, h("input", { readonly: true, class: "mono", value: l.url, id: "share-url" })));
      status.ok("Share link made");
    } catch (e) { status.fail(e); }
  } }, h("input", { name: "sharer_id", required: true, maxlength: 64, placeholder: "sharer's user id" }), h("button", { type: "submit" }, "Make share link"));
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}: sharers`), badge(b.state)),
    broadcastTabs(b, "sharers"), form, link, status, sales));
  await refresh();
}
