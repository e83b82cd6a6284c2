// DOM building and formatting: the only helpers every page shares.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** h("tag", {attrs, onclick, dataset}, ...children): a DOM element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && (tag === "textarea" || tag === "select")) el.value = v; // select: again below
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  if (tag === "select" && attrs && attrs.value !== undefined) el.value = attrs.value;
  return el;
}

export function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
}

/** A status line (role=status) a form writes its outcome to: errors stay until the next try. */
export function statusLine(id) {
  const el = h("p", { class: "status", id, role: "status", "aria-live": "polite" });
  el.ok = (text) => { el.className = "status ok"; el.replaceChildren(text); };
  el.fail = (e) => { el.className = "status error"; el.textContent = e?.code ? `${e.message} (${e.code})` : String(e?.message ?? e); };
  el.clear = () => { el.className = "status"; el.textContent = ""; };
  return el;
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h3", {}, title) : null, ...children);
}

export function table(headers, rows, empty = "Nothing yet.", attrs = {}) {
  return h("table", attrs, h("thead", {}, h("tr", {}, ...headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty))])));
}

export function fmtTime(iso) {
  if (iso === null || iso === undefined || iso === "") return "—";
  const d = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}
export function fmtBits(bps) {
  if (bps === null || bps === undefined) return "—";
  if (bps >= 1e6) return (bps / 1e6).toFixed(2) + " Mb/s";
  return Math.round(bps / 1e3) + " kb/s";
}
export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " GB";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " MB";
  return Math.round(n / 1e3) + " kB";
}
export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  s = Math.max(0, Math.round(s));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return (hh ? `${hh}:${String(mm).padStart(2, "0")}` : `${mm}`) + `:${String(ss).padStart(2, "0")}`;
}
export function fmtFen(fen) { return fen === null || fen === undefined ? "—" : "¥" + (fen / 100).toFixed(2); }
export function yuanToFen(v) { return Math.round(Number(v) * 100); }
export function badge(state) {
  return h("span", { class: `badge ${state}`, "data-state": state }, String(state).replaceAll("_", " "));
}
export function localToIso(value) { return value ? new Date(value).toISOString() : null; }
export function isoToLocal(iso) {
  const d = new Date(iso); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}
export function specsText(specs) {
  return Object.entries(specs || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
}
