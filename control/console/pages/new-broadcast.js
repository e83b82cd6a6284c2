// Schedule a broadcast: title, times, anchor, products from the catalog (by title), settings.
import { h, $, isoToLocal, localToIso, toast } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { productMap } from "../lib/names.js";

export async function newBroadcastView(main) {
  const start = new Date(Date.now() + 3600e3); start.setMinutes(0, 0, 0);
  const end = new Date(start.getTime() + 2 * 3600e3);
  const anchors = isOperator() ? (await api("GET", "/api/users?role=anchor&limit=100")).items : [];
  const products = [...(await productMap(true)).values()];
  const onCreate = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const picked = f.getAll("product").map(Number);
    const typed = String(f.get("products") || "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    const body = {
      title: f.get("title"),
      description: f.get("description") || "",
      scheduled_start: localToIso(f.get("start")),
      scheduled_end: localToIso(f.get("end")),
      product_ids: [...new Set([...picked, ...typed])],
      settings: Object.fromEntries(["comments", "likes", "replay", "sharing"].map((k) => [k, f.get(k) === "on"])),
    };
    if (f.get("anchor")) body.anchor_id = Number(f.get("anchor"));
    try {
      const b = await api("POST", "/api/broadcasts", body);
      toast(`Broadcast #${b.id} scheduled`);
      location.hash = `#/b/${b.id}`;
    } catch (e) { $("#new-error").textContent = e.message; }
  };
  const form = h("form", { id: "new-form", onsubmit: onCreate },
    h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 200 })),
    h("label", {}, "Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 })),
    h("div", { class: "grid" },
      h("label", {}, "Start", h("input", { name: "start", type: "datetime-local", required: true, value: isoToLocal(start.toISOString()) })),
      h("label", {}, "End", h("input", { name: "end", type: "datetime-local", value: isoToLocal(end.toISOString()) }))),
    h("label", {}, "Anchor", h("select", { name: "anchor" }, h("option", { value: "" }, "— none —"),
      ...anchors.map((a) => h("option", { value: a.id }, `${a.display_name || a.username} (${a.username})`)))),
    h("fieldset", { id: "new-products" }, h("legend", {}, "Products on the shelf (in this order; edit later under Shelf)"),
      products.length ? products.map((p) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "product", value: p.id }), ` ${p.title} `, h("span", { class: "muted" }, `#${p.id}`)))
        : h("p", { class: "muted" }, "The catalog is empty: add products under Catalog."),
      h("label", {}, "Other product ids (comma separated)", h("input", { name: "products", placeholder: "101, 102", pattern: "[0-9, ]*" }))),
    h("fieldset", {}, h("legend", {}, "Settings"),
      ...["comments", "likes", "replay", "sharing"].map((k) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: k, checked: true }), " " + k))),
    h("button", { type: "submit" }, "Create broadcast"),
    h("p", { class: "error", id: "new-error", role: "alert" }));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "New broadcast"), form));
}
