// berrylive operator console: native ES modules, no build step. Each page is one module
// under pages/ (parts/ holds the pieces of the broadcast page); lib/ holds what they share.
// Third-party code (mpegts.js, socket.io-client, uPlot, hls.js) comes from node_modules,
// installed by `make console` (npm ci), and is loaded only by the page that needs it.

import { $, $$, h } from "./lib/dom.js";
import { api, clearSession, me, token, whenSignedOut } from "./lib/api.js";
import { leaveView } from "./lib/view.js";
import { forget } from "./lib/names.js";
import { loginView } from "./pages/login.js";
import { scheduleView } from "./pages/schedule.js";
import { newBroadcastView } from "./pages/new-broadcast.js";
import { broadcastView } from "./pages/broadcast.js";
import { roomView } from "./pages/room.js";
import { liveView } from "./pages/live.js";
import { catalogView } from "./pages/catalog.js";
import { shelfView } from "./pages/shelf.js";
import { flashView } from "./pages/flash-sales.js";
import { ordersView, orderView } from "./pages/orders.js";
import { couponsView } from "./pages/coupons.js";
import { prizesView } from "./pages/prizes.js";
import { aftersalesView } from "./pages/aftersales.js";
import { paymentsView } from "./pages/payments.js";
import { broadcastSharersView, sharersView } from "./pages/sharers.js";
import { blocklistView } from "./pages/blocklist.js";
import { lotteriesView } from "./pages/lotteries.js";
import { accountsView } from "./pages/accounts.js";
import { webhooksView } from "./pages/webhooks.js";
import { replaysView, replayView } from "./pages/replays.js";

const main = $("#main");

// hash -> page; the first pattern that matches wins (groups are passed as arguments)
const ROUTES = [
  [/^#\/b\/(\d+)\/room/, (id) => roomView(main, Number(id))],
  [/^#\/b\/(\d+)\/shelf/, (id) => shelfView(main, Number(id))],
  [/^#\/b\/(\d+)\/flash/, (id) => flashView(main, Number(id))],
  [/^#\/b\/(\d+)\/lotteries/, (id) => lotteriesView(main, Number(id))],
  [/^#\/b\/(\d+)\/sharers/, (id) => broadcastSharersView(main, Number(id))],
  [/^#\/b\/(\d+)/, (id) => broadcastView(main, Number(id))],
  [/^#\/new/, () => newBroadcastView(main)],
  [/^#\/live/, () => liveView(main)],
  [/^#\/catalog/, () => catalogView(main)],
  [/^#\/payments/, () => paymentsView(main)],
  [/^#\/orders\/([0-9a-zA-Z_-]+)/, (id) => orderView(main, id)],
  [/^#\/orders/, () => ordersView(main)],
  [/^#\/coupons/, () => couponsView(main)],
  [/^#\/aftersales/, () => aftersalesView(main)],
  [/^#\/prizes(?:\?user=([^&]+))?/, (uid) => prizesView(main, uid ? decodeURIComponent(uid) : "")],
  [/^#\/sharers/, () => sharersView(main)],
  [/^#\/blocklist/, () => blocklistView(main)],
  [/^#\/accounts/, () => accountsView(main)],
  [/^#\/webhooks/, () => webhooksView(main)],
  [/^#\/replays\/([0-9a-zA-Z_.-]+)/, (id) => replayView(main, id)],
  [/^#\/replays/, () => replaysView(main)],
  [/^/, () => scheduleView(main)],
];

// One page renders at a time: a hash change while a page is still loading (its API calls
// in flight) waits for it, then the newest hash is rendered; otherwise the older page could
// finish last and replace the newer one.
let routing = null;
let again = false;
async function route() {
  if (routing) { again = true; return routing; }
  routing = (async () => {
    do { again = false; await render(); } while (again);
  })();
  try { await routing; } finally { routing = null; }
}

async function render() {
  leaveView();
  if (!token()) { $("#nav").hidden = true; loginView(main, () => { location.hash = "#/schedule"; route(); }); return; }
  const user = me();
  $("#nav").hidden = false;
  $("#who").textContent = `${user.display_name || user.username} · ${user.role}`;
  $$("[data-role]").forEach((el) => { el.hidden = !el.dataset.role.split(" ").includes(user.role); });
  const hash = location.hash || "#/schedule";
  $$("[data-nav]").forEach((a) => a.classList.toggle("active", hash.startsWith(`#/${a.dataset.nav}`)));
  for (const [re, page] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    try { await page(...m.slice(1)); }
    catch (e) {
      if (e.status !== 401) main.replaceChildren(h("section", { class: "card" }, h("p", { class: "error", id: "page-error" }, e.message)));
    }
    return;
  }
}

function signOut() { clearSession(); forget(); leaveView(); route(); }
whenSignedOut(signOut);

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/auth/logout"); } catch { /* signed out anyway */ }
  signOut();
});
window.addEventListener("hashchange", route);
route();
