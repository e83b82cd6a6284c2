// Lottery prizes: redeem an offline voucher by its code (once: a second try says when and
// by whom it was redeemed), and a winner's prizes (kind, state, coupon / order / voucher
// code), with "Redeem" on their unredeemed vouchers. docs/shop.md "Lottery prizes".
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
  const show = async (uid) => {
    const r = await api("GET", `/api/users/${encodeURIComponent(uid)}/prizes?limit=200`);
    list.replaceChildren(h("h3", {}, `Prizes of ${uid}`), table(["Won", "Lottery", "Kind", "State", "What", ""], r.items.map((p) => h("tr", { dataset: { grant: p.grant_key } },
      h("td", {}, when(p.created_ms)), h("td", { class: "mono" }, p.lottery_id), h("td", {}, p.kind), h("td", {}, p.status),
      h("td", {}, p.kind === "voucher" ? h("span", {}, h("b", { class: "mono" }, p.code), p.redeemed_ms ? ` · redeemed ${when(p.redeemed_ms)}` : " · not redeemed")
        : p.order_id ? h("a", { href: `#/orders/${p.order_id}` }, `order ${p.order_id}`)
        : p.coupon_id ? `coupon ${p.coupon_id}` : "handed out by the operators"),
      h("td", {}, p.kind === "voucher" && !p.redeemed_ms ? h("button", { type: "button", class: "redeem", onclick: async () => { if (await redeem(p.code)) await show(uid); } }, "Redeem") : ""))),
    "This user has won nothing."));
  };
  const redeemForm = h("form", { id: "redeem-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    const r = await redeem(String(new FormData(ev.target).get("code")));
    if (r) { ev.target.reset(); await show(r.user_id).catch(() => {}); }
  } },
    h("input", { name: "code", placeholder: "voucher code (dashes and spaces ignored)", required: true, maxlength: 64, autocomplete: "off" }),
    h("button", { type: "submit" }, "Redeem voucher"));
  const lookup = h("form", { id: "prizes-lookup", class: "row-actions", onsubmit: (ev) => {
    ev.preventDefault(); status.clear(); show(String(new FormData(ev.target).get("uid"))).catch((e) => status.fail(e));
  } },
    h("input", { name: "uid", placeholder: "winner's user id", required: true, maxlength: 64, value: startUid || "" }),
    h("button", { type: "submit", class: "secondary" }, "Show prizes"));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Lottery prizes"),
    h("p", { class: "muted" }, "A winner shows their voucher code; redeem it once. Or look up a winner's prizes."),
    redeemForm, lookup, status, list));
  if (startUid) await show(startUid);
}
