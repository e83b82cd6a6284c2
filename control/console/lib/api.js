// The session (token in sessionStorage) and the one function every API call goes through.

const TOKEN_KEY = "berrylive.token";
const USER_KEY = "berrylive.user";

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function me() { return JSON.parse(sessionStorage.getItem(USER_KEY) || "null"); }
export function isOperator() { return me()?.role === "operator"; }
export function saveSession(tok, user) {
  sessionStorage.setItem(TOKEN_KEY, tok);
  sessionStorage.setItem(USER_KEY, JSON.stringify(user));
}
export function clearSession() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(USER_KEY); }

export class ApiError extends Error {
  constructor(status, code, message, details = {}) { super(message); this.status = status; this.code = code; this.details = details; }
}

let onSignedOut = () => {};
export function whenSignedOut(fn) { onSignedOut = fn; }

/** api("POST", "/api/x", body): JSON in, JSON out; errors as ApiError(status, code, message). */
export async function api(method, path, body, raw = false) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let payload;
  if (body instanceof Blob) { payload = body; headers["Content-Type"] = body.type || "application/octet-stream"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, { method, headers, body: payload });
  if (r.status === 401 && path !== "/api/auth/login") {
    clearSession(); onSignedOut();
    throw new ApiError(401, "unauthorized", "signed out");
  }
  if (!r.ok) {
    let err = { code: "http_" + r.status, message: r.statusText || `HTTP ${r.status}` };
    try { err = (await r.json()).error || err; } catch { /* not JSON */ }
    throw new ApiError(r.status, err.code, err.message, err); // details: the error's other fields
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

/** Every item of a limit/offset list (bounded: at most `max`). */
export async function listAll(path, key = "items", max = 1000) {
  const out = [];
  const sep = path.includes("?") ? "&" : "?";
  for (let offset = 0; out.length < max;) {
    const page = await api("GET", `${path}${sep}limit=100&offset=${offset}`);
    const items = page[key] || [];
    out.push(...items);
    if (items.length < 100) break;
    offset += items.length;
  }
  return out;
}
