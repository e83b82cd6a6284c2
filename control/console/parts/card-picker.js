// "Now explaining": the shelf's products by title, the live card marked, push and clear.
import { h, fmtFen, fmtTime, statusLine } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { productLabel, productMap } from "../lib/names.js";

export function cardPicker(getB) {
  const status = statusLine("card-status");
  const list = h("ul", { id: "card-picker", class: "picker" });
  const el = h("section", { class: "card", id: "card-card" }, h("h3", {}, "Now explaining"), list,
    h("div", { class: "row-actions" }, h("button", { type: "button", class: "secondary", id: "card-clear", onclick: () => clear() }, "Clear card")), status);
  let current = null;
  let items = [];
  const push = async (pid) => {
    try {
      await api("POST", `/api/broadcasts/${getB().id}/card`, { product_id: pid });
      status.ok(`Card pushed: ${items.find((i) => i.product.id === pid)?.product.title ?? pid}`);
      await refresh();
    } catch (e) { status.fail(e); }
  };
  const clear = async () => {
    try { await api("DELETE", `/api/broadcasts/${getB().id}/card`); status.ok("Card cleared"); await refresh(); }
    catch (e) { status.fail(e); }
  };
  const render = () => {
    list.replaceChildren(...(items.length ? items.map(({ product: p, on_shelf }) => {
      const live = current && current.product_id === p.id;
      const prices = (p.skus || []).map((s) => s.price_fen);
      return h("li", { class: live ? "live" : "", dataset: { product: p.id } },
        p.images?.[0] ? h("img", { src: p.images[0], alt: "" }) : null,
        h("span", { class: "grow" }, h("b", {}, p.title), " ",
          h("span", { class: "muted" }, prices.length ? fmtFen(Math.min(...prices)) : ""),
          on_shelf === false ? h("span", { class: "muted" }, " (off shelf)") : null,
          live ? h("span", { class: "badge live card-live" }, `live since ${fmtTime(current.pushed_at)}`) : null),
        h("button", { type: "button", class: live ? "secondary" : "", disabled: on_shelf === false, onclick: () => push(p.id) }, live ? "Push again" : "Push card"));
    }) : [h("li", { class: "muted" }, "The shelf is empty: add products under Shelf.")]));
  };
  const refresh = async () => {
    const b = getB();
    const [shelf, cur] = await Promise.all([
      api("GET", `/api/broadcasts/${b.id}/shelf`).catch(() => ({ items: [] })),
      api("GET", `/api/broadcasts/${b.id}/card`).catch(() => ({ card: null })),
    ]);
    items = shelf.items || [];
    if (!items.length && b.product_ids.length) {
      const m = await productMap();
      items = b.product_ids.map((id) => ({ product: m.get(id) || { id, title: productLabel(m, id), skus: [] }, on_shelf: true }));
    }
    current = cur.card && !cur.card.cleared_at ? cur.card : null;
    render();
  };
  return { el, refresh };
}
