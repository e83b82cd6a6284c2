// Catalog: products (title, description, images: uploaded files or URLs) and their SKUs
// (colour/size and other attributes, price, stock): create, edit, upload and remove
// images, add a SKU, change price and stock.
import { h, fmtFen, specsText, statusLine, table, yuanToFen } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { productMap } from "../lib/names.js";

function specsFrom(f) {
  const specs = {};
  if (f.get("colour")) specs.colour = f.get("colour");
  if (f.get("size")) specs.size = f.get("size");
  for (const pair of String(f.get("more") || "").split(",")) {
    const [k, v] = pair.split("=").map((s) => s && s.trim());
    if (k && v) specs[k] = v;
  }
  return specs;
}

function skuFields() {
  return h("div", { class: "grid small" },
    h("label", {}, "SKU code", h("input", { name: "code", maxlength: 64 })),
    h("label", {}, "Colour", h("input", { name: "colour", maxlength: 64 })),
    h("label", {}, "Size", h("input", { name: "size", maxlength: 64 })),
    h("label", {}, "Other attributes (k=v, …)", h("input", { name: "more", maxlength: 200 })),
    h("label", {}, "Price ¥", h("input", { name: "price", type: "number", min: 0, step: 0.01, required: true })),
    h("label", {}, "Stock", h("input", { name: "stock", type: "number", min: 0, step: 1, required: true })));
}

function skuBody(f) {
  return { code: f.get("code") || "", specs: specsFrom(f), price_fen: yuanToFen(f.get("price")), stock: Number(f.get("stock")) };
}

export async function catalogView(main) {
  const status = statusLine("catalog-status");
  const list = h("div", { id: "products" });
  const canEdit = isOperator();
  const createForm = h("form", { id: "product-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const images = String(f.get("images") || "").split(/\s+/).filter(Boolean);
    try {
      const p = await api("POST", "/api/products", { title: f.get("title"), description: f.get("description") || "", images, skus: [skuBody(f)] });
      status.ok(`Product #${p.id} “${p.title}” created`);
      ev.target.reset();
      await refresh();
    } catch (e) { status.fail(e); }
  } },
    h("div", { class: "grid" },
      h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 200 })),
      h("label", {}, "Image URLs (space separated)", h("input", { name: "images", maxlength: 4000 }))),
    h("label", {}, "Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 })),
    h("h4", {}, "First SKU"), skuFields(),
    h("button", { type: "submit" }, "Create product"));

  const skuRow = (s) => {
    const price = h("input", { type: "number", min: 0, step: 0.01, value: (s.price_fen / 100).toFixed(2), class: "narrow-input", name: "price" });
    const stock = h("input", { type: "number", min: 0, step: 1, value: s.stock, class: "narrow-input", name: "stock" });
    return h("tr", { dataset: { sku: s.id } },
      h("td", {}, `#${s.id}`), h("td", { class: "mono" }, s.code || "—"), h("td", {}, specsText(s.specs) || "—"),
      h("td", {}, canEdit ? price : fmtFen(s.price_fen)), h("td", {}, canEdit ? stock : s.stock),
      h("td", {}, canEdit ? h("button", { type: "button", class: "secondary", onclick: async () => {
        try {
          await api("PATCH", `/api/skus/${s.id}`, { price_fen: yuanToFen(price.value), stock: Number(stock.value) });
          status.ok(`SKU #${s.id} saved`);
        } catch (e) { status.fail(e); }
      } }, "Save") : null));
  };
  const productCard = (p) => {
    const addSku = h("form", { class: "add-sku", hidden: true, onsubmit: async (ev) => {
      ev.preventDefault();
      try { const s = await api("POST", `/api/products/${p.id}/skus`, skuBody(new FormData(ev.target))); status.ok(`SKU #${s.id} added to “${p.title}”`); await refresh(); }
      catch (e) { status.fail(e); }
    } }, skuFields(), h("button", { type: "submit" }, "Add SKU"));
    const edit = canEdit ? h("details", { class: "edit-product" }, h("summary", {}, "Edit product"),
      h("form", { onsubmit: async (ev) => {
        ev.preventDefault();
        const f = new FormData(ev.target);
        const body = { title: f.get("title"), description: f.get("description") || "", images: String(f.get("images") || "").split(/\s+/).filter(Boolean) };
        try { await api("PATCH", `/api/products/${p.id}`, body); status.ok(`Product #${p.id} saved`); await refresh(); }
        catch (e) { status.fail(e); }
      } },
        h("div", { class: "grid" },
          h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 200, value: p.title })),
          h("label", {}, "Image URLs (space separated)", h("input", { name: "images", maxlength: 4000, value: (p.images || []).join(" ") }))),
        h("label", {}, "Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 }, p.description || "")),
        h("button", { type: "submit" }, "Save product"))) : "";
    const uploaded = (src) => src.startsWith(`/api/products/${p.id}/images/`);
    const thumbs = h("div", { class: "images" }, ...(p.images || []).map((src) => h("figure", { class: "thumb-box" },
      h("img", { src, alt: "", class: "thumb", loading: "lazy" }),
      canEdit && uploaded(src) ? h("button", { type: "button", class: "secondary remove-image", title: "remove this image", onclick: async () => {
        if (!confirm("Remove this image from the product?")) return;
        try { await api("DELETE", src); status.ok(`Image removed from “${p.title}”`); await refresh(); }
        catch (e) { status.fail(e); }
      } }, "×") : null)));
    const upload = canEdit ? h("label", { class: "upload-images button secondary" }, "Upload images",
      h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", multiple: true, hidden: true, onchange: async (ev) => {
        const files = [...ev.target.files];
        let added = 0;
        for (const file of files) {
          try { await api("POST", `/api/products/${p.id}/images`, file); added += 1; }
          catch (e) { status.fail({ ...e, message: `${file.name}: ${e.message}` }); ev.target.value = ""; await refresh(); return; }
        }
        status.ok(`${added} image(s) uploaded to “${p.title}”`);
        ev.target.value = "";
        await refresh();
      } })) : null;
    return h("article", { class: "product", dataset: { product: p.id } },
      h("div", { class: "head" },
        h("div", {}, thumbs, upload),
        h("div", { class: "grow" }, h("h4", {}, `${p.title} `, h("span", { class: "muted" }, `#${p.id}`)), h("p", { class: "muted" }, p.description || ""))),
      table(["SKU", "Code", "Attributes", "Price ¥", "Stock", ""], (p.skus || []).map(skuRow)),
      canEdit ? h("button", { type: "button", class: "secondary", onclick: () => { addSku.hidden = !addSku.hidden; } }, "+ SKU") : null, addSku, edit);
  };
  const refresh = async () => {
    const products = [...(await productMap(true)).values()];
    list.replaceChildren(...(products.length ? products.map(productCard) : [h("p", { class: "muted" }, "No products yet.")]));
  };
  main.replaceChildren(
    canEdit ? h("section", { class: "card" }, h("h2", {}, "New product"), createForm, status) : status,
    h("section", { class: "card" }, h("h2", {}, "Catalog"), list));
  await refresh();
}
