// Lottery prizes: every prize with what an operator acts on (its name, the lottery, the
// winner, its state: owed / to ship / shipped / ..., and the order, coupon or voucher),
// filtered by lottery, winner and state (GET /api/lottery/prizes); redeem an offline
// voucher by its code (once: a second try says when and by whom it was redeemed), "Redeem"
// on an unredeemed voucher in the list. docs/shop.md "Lottery prizes", docs/console.md.
import { h, fmtTime, statusLine, table } from "../lib/dom.js";
import { api } from "../lib/api.js";

const when = (ms) => (ms ? fmtTime(new Date(ms).toISOString()) : "—");

export async function prizesView(main, startUid) {
  const status = statusLine("redeem-status");
  const list = h("div", { id: "prizes-list" });
  const redeem = async (code) => {
    try {
      const r = await api("POST", "/api/vouchers/redeem", { code });
      status.ok(`Voucher ${r.code} redeemed: ${r.user_id}'s prize from lottery ${r.lottery_id}, ${when(r.redeemed_ms)} by ${r.redeemed_by}.`);
      return r;
    } catch (e) {
      if (e.code === "already_redeemed") {
        const x = e.details || {};
        status.className = "status error";
        status.textContent = `Already redeemed${x.redeemed_ms ? ` on ${when(x.redeemed_ms)}` : ""}${x.redeemed_by ? ` by ${x.redeemed_by}` : ""}: do not hand it out again. (already_redeemed)`;
      } else status.fail(e);
      return null;
    }
  };
  const STATES = ["owed", "to_ship", "shipped", "delivered", "granted", "used", "redeemed", "failed_no_stock", "cancelled", "refunded"];
  const label = (st) => st.replace(/_/g, " ");
  const what = (p) => p.kind === "voucher" ? h("span", {}, "voucher ", h("b", { class: "mono" }, p.code), p.redeemed_ms ? ` · redeemed ${when(p.redeemed_ms)}` : "")
    : p.order_id ? h("a", { href: `#/orders/${p.order_id}`, class: "order" }, `order ${p.order_id}`)
    : p.coupon_id ? `coupon ${p.coupon_id}` : p.kind === "manual" ? "hand it out" : "—";
  let shown = { user: startUid || "", lottery: "", state: "" };
  const show = async (f = shown) => {
    shown = f;
    const q = new URLSearchParams({ limit: "200" });
    if (f.user) q.set("user_id", f.user);
    if (f.lottery) q.set("lottery_id", f.lottery);
    if (f.state) q.set("state", f.state);
    const r = await api("GET", `/api/lottery/prizes?${q}`);
    const title = [f.user && `won by ${f.user}`, f.lottery && `from lottery ${f.lottery}`, f.state && label(f.state)].filter(Boolean).join(", ");
    list.replaceChildren(h("h3", {}, title ? `Prizes ${title}` : "Latest prizes"),
      table(["Won", "Prize", "Lottery", "Winner", "State", "Order, coupon or code", ""], r.items.map((p) => h("tr", { dataset: { grant: p.grant_key, state: p.state } },
        h("td", {}, when(p.created_ms)),
        h("td", { class: "prize-name" }, p.name || h("span", { class: "muted" }, "(no name)"), h("span", { class: "muted" }, ` · ${p.kind}`)),
        h("td", {}, h("a", { class: "mono lottery", href: "#/prizes", onclick: (ev) => { ev.preventDefault(); form.elements.lottery.value = p.lottery_id; show({ ...shown, lottery: p.lottery_id }).catch((e) => status.fail(e)); } }, p.lottery_id)),
        h("td", {}, h("a", { class: "mono winner", href: `#/prizes?user=${encodeURIComponent(p.user_id)}` }, p.user_id)),
        h("td", { class: `prize-state state-${p.state}` }, label(p.state)),
        h("td", {}, what(p)),
        h("td", {}, p.kind === "voucher" && !p.redeemed_ms ? h("button", { type: "button", class: "redeem", onclick: async () => { if (await redeem(p.code)) await show(); } }, "Redeem") : ""))),
      title ? "No prize matches." : "No prize yet."));
  };
  const redeemForm = h("form", { id: "redeem-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    const r = await redeem(String(new FormData(ev.target).get("code")));
    if (r) { ev.target.reset(); await show().catch(() => {}); }
  } },
    h("input", { name: "code", placeholder: "voucher code (dashes and spaces ignored)", required: true, maxlength: 64, autocomplete: "off" }),
    h("button", { type: "submit" }, "Redeem voucher"));
  const form = h("form", { id: "prizes-lookup", class: "row-actions", onsubmit: (ev) => {
    ev.preventDefault(); status.clear();
    const f = new FormData(ev.target);
    show({ user: String(f.get("uid") || "").trim(), lottery: String(f.get("lottery") || "").trim(), state: String(f.get("state") || "") }).catch((e) => status.fail(e));
  } },
    h("input", { name: "uid", placeholder: "winner's user id", maxlength: 64, value: startUid || "" }),
    h("input", { name: "lottery", placeholder: "lottery id", maxlength: 64 }),
    h("select", { name: "state" }, h("option", { value: "" }, "any state"), ...STATES.map((st) => h("option", { value: st }, label(st)))),
    h("button", { type: "submit", class: "secondary" }, "Show prizes"));
  const lookup = form;
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Lottery prizes"),
    h("p", { class: "muted" }, "A winner shows their voucher code; redeem it once. Below: the latest prizes and what each still needs (to ship, owed), by winner, lottery or state."),
    redeemForm, lookup, status, list));
  await show().catch((e) => status.fail(e));
}
