// A broadcast's goods shelf: which products, in which order (the card order viewers see),
// on or off shelf; add products from the catalog.
import { h, badge, fmtFen, statusLine } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { productMap } from "../lib/names.js";
import { broadcastTabs } from "./broadcast.js";

export async function shelfView(main, id) {
  const b = await api("GET", `/api/broadcasts/${id}`);
  const status = statusLine("shelf-status");
  const list = h("ol", { id: "shelf", class: "shelf" });
  const adder = h("select", { id: "shelf-add" });
  let items = [];
  const save = async (next, what) => {
    try {
      const r = await api("PUT", `/api/broadcasts/${id}/shelf`, { items: next.map((i) => ({ product_id: i.product.id, on_shelf: i.on_shelf })) });
      items = r.items; render(); status.ok(what);
    } catch (e) { status.fail(e); }
  };
  const move = (i, d) => { const n = [...items]; const [x] = n.splice(i, 1); n.splice(i + d, 0, x); save(n, `Moved “${x.product.title}”`); };
  const render = async () => {
    list.replaceChildren(...(items.length ? items.map((it, i) => {
      const p = it.product;
      const prices = (p.skus || []).map((s) => s.price_fen);
      return h("li", { dataset: { product: p.id }, class: it.on_shelf ? "" : "off" },
        p.images?.[0] ? h("img", { src: p.images[0], alt: "", class: "thumb" }) : null,
        h("span", { class: "grow" }, h("b", {}, p.title), " ", h("span", { class: "muted" }, prices.length ? `from ${fmtFen(Math.min(...prices))}` : ""), " ", it.on_shelf ? badge("on_shelf") : badge("off_shelf")),
        h("button", { type: "button", class: "secondary", disabled: i === 0, onclick: () => move(i, -1), title: "up" }, "↑"),
        h("button", { type: "button", class: "secondary", disabled: i === items.length - 1, onclick: () => move(i, 1), title: "down" }, "↓"),
        h("button", { type: "button", class: "secondary", onclick: async () => {
          try { const r = await api("PATCH", `/api/broadcasts/${id}/shelf/${p.id}`, { on_shelf: !it.on_shelf }); items = r.items; render(); status.ok(`“${p.title}” ${it.on_shelf ? "off" : "on"} shelf`); }
          catch (e) { status.fail(e); }
        } }, it.on_shelf ? "Take off" : "Put on"),
        h("button", { type: "button", class: "secondary", onclick: () => save(items.filter((x) => x !== it), `Removed “${p.title}”`) }, "Remove"));
    }) : [h("li", { class: "muted" }, "The shelf is empty.")]));
    const m = await productMap();
    const on = new Set(items.map((i) => i.product.id));
    adder.replaceChildren(...[...m.values()].filter((p) => !on.has(p.id)).map((p) => h("option", { value: p.id }, `${p.title} (#${p.id})`)));
  };
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}: shelf`), badge(b.state)),
    broadcastTabs(b, "shelf"), list,
    h("div", { class: "row-actions" }, adder, h("button", { type: "button", id: "shelf-add-btn", onclick: async () => {
      const m = await productMap();
      const p = m.get(Number(adder.value));
      if (p) await save([...items, { product: p, on_shelf: true }], `Added “${p.title}”`);
    } }, "Add to shelf")), status));
  items = (await api("GET", `/api/broadcasts/${id}/shelf`)).items || [];
  await render();
}
