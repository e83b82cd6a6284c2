// Flash sales of a broadcast: create (a time window, or open now until the stock is sold),
// watch sold/left with a countdown, change the end, limit or stock live, close, and show
// the sale's card in the room.
import { h, badge, fmtDuration, fmtFen, fmtTime, isoToLocal, localToIso, specsText, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { every } from "../lib/view.js";
import { productMap } from "../lib/names.js";
import { broadcastTabs } from "./broadcast.js";

function countdown(s) {
  const now = Date.now();
  const start = Date.parse(s.starts_at), end = Date.parse(s.ends_at);
  const fmt = (ms) => fmtDuration(ms / 1000);
  if (s.status === "scheduled" || now < start) return `starts in ${fmt(start - now)}`;
  if (s.status === "open") return `ends in ${fmt(end - now)}`;
  return s.closed_at ? `closed ${fmtTime(s.closed_at)}` : `ended ${fmtTime(s.ends_at)}`;
}

export async function flashView(main, id) {
  const b = await api("GET", `/api/broadcasts/${id}`);
  const products = await productMap(true);
  const status = statusLine("flash-status");
  const listEl = h("div", { id: "flash-list" });
  const skus = [...products.values()].flatMap((p) => (p.skus || []).map((s) => ({ ...s, title: p.title })));
  const defaultEnd = b.scheduled_end ? new Date(b.scheduled_end) : new Date(Date.now() + 4 * 3600e3);
  const windowFields = h("div", { class: "grid small", id: "flash-window" },
    h("label", {}, "Starts", h("input", { name: "starts", type: "datetime-local", value: isoToLocal(new Date().toISOString()) })),
    h("label", {}, "Ends", h("input", { name: "ends", type: "datetime-local", value: isoToLocal(new Date(Date.now() + 10 * 60e3).toISOString()) })));
  const form = h("form", { id: "flash-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const byStock = f.get("kind") === "stock";
    const body = {
      broadcast_id: b.id, sku_id: Number(f.get("sku")), sale_price_fen: yuanToFen(f.get("price")),
      sale_stock: Number(f.get("stock")), per_user_limit: Number(f.get("limit")),
      starts_at: byStock ? new Date().toISOString() : localToIso(f.get("starts")),
      ends_at: byStock ? defaultEnd.toISOString() : localToIso(f.get("ends")),
    };
    if (f.get("card") === "on") body.show_card = true; // its card in the room, same call
    try {
      const s = await api("POST", "/api/flash-sales", body);
      status.ok(`Flash sale #${s.id} created${body.show_card ? " and its card shown" : ""}`);
      await refresh();
    } catch (e) { status.fail(e); }
  } },
    h("div", { class: "grid small" },
      h("label", {}, "SKU", h("select", { name: "sku", required: true }, ...skus.map((s) => h("option", { value: s.id }, `${s.title} · ${specsText(s.specs) || s.code || "#" + s.id} · ${fmtFen(s.price_fen)} · stock ${s.stock}`)))),
      h("label", {}, "Sale price ¥", h("input", { name: "price", type: "number", min: 0, step: 0.01, required: true })),
      h("label", {}, "Units for the sale", h("input", { name: "stock", type: "number", min: 1, step: 1, required: true, value: 10 })),
      h("label", {}, "Per buyer", h("input", { name: "limit", type: "number", min: 1, step: 1, value: 1 }))),
    h("fieldset", {}, h("legend", {}, "Runs"),
      h("label", { class: "inline" }, h("input", { type: "radio", name: "kind", value: "window", checked: true, onchange: () => { windowFields.hidden = false; } }), " in a time window"),
      h("label", { class: "inline" }, h("input", { type: "radio", name: "kind", value: "stock", onchange: () => { windowFields.hidden = true; } }), ` from now until sold out (or the show's end, ${fmtTime(defaultEnd.toISOString())})`),
      windowFields),
    h("label", { class: "inline" }, h("input", { type: "checkbox", name: "card", checked: true }), " show its card in the room"),
    h("button", { type: "submit" }, "Create flash sale"));

  let sales = [];
  // where every unit of the sale is (Redis, orders, in flight, given back): docs/shop.md
  const audit = (s) => isOperator() ? h("button", { type: "button", class: "secondary", onclick: async () => {
    try {
      const a = await api("GET", `/api/flash-sales/${s.id}/audit`);
      const text = `Audit of #${s.id}: ${a.redis_stock} on sale + ${a.db_held} held by orders + ${a.in_flight} in flight + ${a.returned_at_settlement} returned at settlement + ${a.returned_to_sku} back to the SKU = ${a.sale_stock}: ${a.consistent ? "consistent" : "NOT consistent"}${a.users_over_limit.length ? `; over the limit: ${a.users_over_limit.join(", ")}` : ""}`;
      if (a.consistent) status.ok(text); else status.fail(new Error(text));
    } catch (e) { status.fail(e); }
  } }, "Audit") : "";
  const editRow = (s) => {
    const ends = h("input", { type: "datetime-local", value: isoToLocal(s.ends_at), class: "datetime-input" });
    const limit = h("input", { type: "number", min: 1, value: s.per_user_limit, class: "narrow-input" });
    const stock = h("input", { type: "number", min: 1, value: s.sale_stock, class: "narrow-input" });
    const live = ["scheduled", "open", "sold_out"].includes(s.status);
    return h("tr", { dataset: { sale: s.id } },
      h("td", {}, `#${s.id}`), h("td", {}, products.get(s.product_id)?.title ?? `product ${s.product_id}`),
      h("td", {}, fmtFen(s.sale_price_fen)), h("td", {}, badge(s.status)),
      h("td", { class: "sold" }, `${s.sale_stock - s.remaining} sold · ${s.remaining} left of ${s.sale_stock}`),
      h("td", { class: "countdown", dataset: { starts: s.starts_at, ends: s.ends_at } }, countdown(s)),
      h("td", {}, live ? h("div", { class: "row-actions" }, "end", ends, "limit", limit, "stock", stock,
        h("button", { type: "button", class: "secondary", onclick: async () => {
          const body = {};
          if (ends.value !== isoToLocal(s.ends_at)) body.ends_at = localToIso(ends.value);
          if (Number(limit.value) !== s.per_user_limit) body.per_user_limit = Number(limit.value);
          if (Number(stock.value) !== s.sale_stock) body.sale_stock = Number(stock.value);
          try { await api("PATCH", `/api/flash-sales/${s.id}`, body); status.ok(`Flash sale #${s.id} changed`); await refresh(); } catch (e) { status.fail(e); }
        } }, "Save"),
        h("button", { type: "button", class: "secondary", onclick: async () => {
          try { await api("POST", `/api/broadcasts/${id}/card`, { product_id: s.product_id, sku_id: s.sku_id, flash_sale_id: s.id }); status.ok(`Card of flash sale #${s.id} shown`); } catch (e) { status.fail(e); }
        } }, "Show card"),
        h("button", { type: "button", class: "danger", dataset: { close: s.id }, onclick: async () => {
          if (!confirm(`Close flash sale #${s.id} now?`)) return;
          try { await api("POST", `/api/flash-sales/${s.id}/close`, { reason: "closed from the console" }); status.ok(`Flash sale #${s.id} closed`); await refresh(); } catch (e) { status.fail(e); }
        } }, "Close"), audit(s)) : h("span", { class: "muted" }, s.returned_stock ? `${s.returned_stock} returned to the SKU ` : "", audit(s))));
  };
  const refresh = async () => {
    const fresh = (await api("GET", `/api/flash-sales?broadcast_id=${id}&limit=200`)).items || [];
    const shape = (xs) => xs.map((x) => `${x.id}:${x.status}:${x.ends_at}:${x.sale_stock}:${x.per_user_limit}`).join(",");
    const same = shape(fresh) === shape(sales);
    sales = fresh;
    if (same && listEl.firstChild) {
      // only the figures moved: leave the edit fields alone
      for (const s of sales) {
        const td = listEl.querySelector(`tr[data-sale="${s.id}"] td.sold`);
        if (td) td.textContent = `${s.sale_stock - s.remaining} sold · ${s.remaining} left of ${s.sale_stock}`;
      }
      return;
    }
    listEl.replaceChildren(table(["Sale", "Product", "Price", "Status", "Sold / left", "Time", "Change live"], sales.map(editRow), "No flash sale yet."));
  };
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}: flash sales`), badge(b.state)),
    broadcastTabs(b, "flash"), form, status), h("section", { class: "card" }, h("h3", {}, "Sales"), listEl));
  await refresh();
  let n = 0;
  every(1000, () => {
    for (const td of listEl.querySelectorAll("td.countdown")) {
      const s = sales.find((x) => String(x.id) === td.parentElement.dataset.sale);
      if (s) td.textContent = countdown(s);
    }
    if (++n % 3 === 0) refresh().catch(() => {});
  });
}
