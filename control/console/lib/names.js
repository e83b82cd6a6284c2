// Names for ids: accounts (anchors) and products, fetched once per page view and cached.
import { api, isOperator, listAll } from "./api.js";

let users = null;
let products = null;

export async function userNames() {
  if (users) return users;
  users = new Map();
  if (!isOperator()) return users;
  try { for (const u of await listAll("/api/users")) users.set(u.id, u); } catch { /* names only */ }
  return users;
}
export function userLabel(map, id) {
  if (id === null || id === undefined) return "—";
  const u = map.get(Number(id));
  return u ? (u.display_name || u.username) : `#${id}`;
}

/** Every product (id -> product with skus). */
export async function productMap(fresh = false) {
  if (products && !fresh) return products;
  const m = new Map();
  let after = 0;
  for (let i = 0; i < 20; i++) {
    const page = await api("GET", `/api/products?limit=100${after ? `&after=${after}` : ""}`);
    const items = page.items || [];
    for (const p of items) m.set(p.id, p);
    if (items.length < 100) break;
    after = items[items.length - 1].id;
  }
  products = m;
  return m;
}
export function productLabel(map, id) {
  const p = map.get(Number(id));
  return p ? p.title : `product ${id}`;
}
export function forget() { users = null; products = null; }
