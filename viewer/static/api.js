// HTTP helpers and the viewer token (who this viewer is for comments, likes, lotteries, buys).
//
// Where the token comes from, in this order:
//   1. the page URL's fragment, `#token=...`: a site or mini-program backend mints it for its
//      signed-in user (POST /api/broadcasts/{id}/viewer-token with its operator API token) and
//      opens /watch/APP/STREAM#token=... (a fragment never reaches server logs); kept for the tab;
//   2. a token kept earlier for this room and not expired;
//   3. the demo only (viewer.anonymous_tokens): POST /api/watch/APP/STREAM/token.
// Without one the page plays and shows comments, read-only.

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
    this.body = body || {};
  }
}

export async function api(method, path, { body, token, headers = {} } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (token) h["X-Viewer-Token"] = token;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", "网络错误 · network error");
  }
  const text = await resp.text();
  let data = {};
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { text }; }
  }
  if (!resp.ok) {
    const err = data.error || {};
    throw new ApiError(resp.status, err.code, err.message, data);
  }
  return data;
}

export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part + "===".slice((part.length + 3) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    return null;
  }
}

export function usable(token, room) {
  const c = token && claims(token);
  if (!c || typeof c.exp !== "number" || c.exp * 1000 < Date.now() + 60_000) return null;
  if (c.room && c.room !== room) return null;
  return c;
}

function storeGet(store, key) {
  try { return store.getItem(key); } catch (e) { return null; }
}
function storeSet(store, key, value) {
  try { value === null ? store.removeItem(key) : store.setItem(key, value); } catch (e) { /* private mode */ }
}

export class Viewer {
  constructor(room) {
    this.room = room;
    this.token = null;
    this.user = null; // {uid, nick}
  }

  async obtain(info) {
    const key = `berrylive:token:${this.room}`;
    const hash = new URLSearchParams(location.hash.slice(1));
    const given = hash.get("token");
    if (given) {
      storeSet(sessionStorage, key, given);
      hash.delete("token");
      const rest = hash.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    }
    for (const candidate of [given, storeGet(sessionStorage, key), storeGet(localStorage, key)]) {
      const c = candidate && usable(candidate, this.room);
      if (c) return this.use(candidate, c);
    }
    if (info.anonymous_tokens && info.broadcast) {
      try {
        const t = await api("POST", `/api/watch/${info.room}/token`, { body: {} });
        storeSet(localStorage, key, t.token);
        return this.use(t.token, usable(t.token, this.room));
      } catch (e) {
        console.warn("no anonymous token", e);
      }
    }
    return null;
  }

  use(token, c) {
    this.token = token;
    this.user = { uid: c.uid, nick: c.nick };
    return this.user;
  }

  forget() {
    storeSet(sessionStorage, `berrylive:token:${this.room}`, null);
    storeSet(localStorage, `berrylive:token:${this.room}`, null);
    this.token = null;
    this.user = null;
  }
}

// A share link (/watch/APP/STREAM?share=...) credits its sharer with what this viewer buys
// (docs/shop.md, "Sharers"): the token is kept for the tab and sent with every buy.
export function shareToken(room) {
  const key = `berrylive:share:${room}`;
  const given = new URLSearchParams(location.search).get("share");
  if (given && given.length <= 512) storeSet(sessionStorage, key, given);
  return storeGet(sessionStorage, key);
}

// One id per browser for the shop's abuse limits (X-Device-Id).
export function deviceId() {
  const key = "berrylive:device";
  let id = storeGet(localStorage, key);
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
    storeSet(localStorage, key, id);
  }
  return id;
}

export function yuan(fen) {
  if (typeof fen !== "number") return "";
  return `¥${(fen / 100).toFixed(2)}`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function toast(text, ms = 2500) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast._timer);
  toast._timer = setTimeout(() => { t.hidden = true; }, ms);
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
