// What a page leaves running (intervals, sockets, players) is stopped when the page changes.

let timers = [];
let cleanups = [];

/** Run fn now and every ms until the page changes. */
export function every(ms, fn) { fn(); const id = setInterval(fn, ms); timers.push(id); return id; }
export function onLeave(fn) { cleanups.push(fn); }
export function leaveView() {
  timers.forEach(clearInterval); timers = [];
  cleanups.forEach((fn) => { try { fn(); } catch { /* ignore */ } }); cleanups = [];
}

export function loadScript(src) {
  return new Promise((resolve, reject) => {
    if (document.querySelector(`script[src="${src}"]`)) return resolve();
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve; s.onerror = () => reject(new Error(`cannot load ${src} (run: make console)`));
    document.head.append(s);
  });
}

export function loadStyle(href) {
  if (document.querySelector(`link[href="${href}"]`)) return;
  const l = document.createElement("link");
  l.rel = "stylesheet"; l.href = href;
  document.head.append(l);
}
