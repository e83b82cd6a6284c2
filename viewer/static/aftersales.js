// After-sales (申请售后) in the bag's order list: the buyer asks for a refund of a paid or
// shipped order (a small form: kind, reason, their words, the amount), then sees the
// request's state on the order (open / approved / refunded / rejected with the reason) and may
// withdraw it while it is open. The shop decides everything else (docs/shop.md "After-sales":
// the window after payment, one open request per order, what is left to refund).

import { api, deviceId, el, yuan } from "./api.js";
import { openSheet } from "./sheet.js";

const KINDS = {
  refund_only: "仅退款 · Refund only",
  return_refund: "退货退款 · Return and refund",
};
const REASONS = {
  not_as_described: "与描述不符 · Not as described",
  damaged: "商品损坏 · Damaged",
  wrong_item: "发错货 · Wrong item",
  no_longer_wanted: "不想要了 · No longer wanted",
  other: "其他 · Other",
};
const STATE_TEXT = {
  open: "售后处理中 · after-sales request open",
  approved: "售后已同意，退款中 · approved, refunding",
  refunded: "售后已退款 · refunded",
  rejected: "售后被拒绝 · rejected",
  withdrawn: "售后已撤回 · withdrawn",
};
const ERRORS = {
  too_late: "已超过售后期限 · too late for after-sales on this order",
  request_open: "已有处理中的售后申请 · a request is open already",
  nothing_to_refund: "订单已全额退款 · nothing left to refund",
  refund_exceeds_paid: "金额超过可退金额 · more than what is left to refund",
  order_not_eligible: "该订单不能申请售后 · this order cannot have after-sales",
  kind_not_allowed: "未发货订单只能仅退款 · not shipped: refund only",
  rate_limited: "操作太频繁，请稍后再试 · too many tries, wait a moment",
  illegal_transition: "申请状态已变化 · the request changed meanwhile",
  request_busy: "客服正在处理 · being decided right now",
};

export function explain(e) {
  return ERRORS[e.code] || e.message || String(e);
}

// The viewer's requests, the latest per order (the list is newest first).
export async function latestByOrder(token) {
  const r = await api("GET", "/api/me/aftersales?limit=100", { token });
  const byOrder = new Map();
  for (const req of r.items || []) if (!byOrder.has(req.order_id)) byOrder.set(req.order_id, req);
  return byOrder;
}

function left(o) {
  return o.amount_fen - (o.refunded_fen || 0);
}

// What an order of the bag shows of after-sales: the request's state (with the rejection
// reason, a withdraw button while open) and/or the button asking for one.
export function afterSalesPart(o, req, { token, reopen }) {
  const part = el("span", { class: "aftersales" });
  if (req) {
    const text = STATE_TEXT[req.state] || req.state;
    part.append(el("span", { class: `as-state small ${req.state === "refunded" ? "ok" : ""}`, "data-state": req.state, "data-request-id": req.id },
      req.state === "rejected" && req.note ? `${text}: ${req.note}` : text,
      req.state === "refunded" ? ` ${yuan(req.approved_fen ?? req.amount_fen)}` : ""));
    if (req.state === "open") {
      part.append(el("button", { type: "button", class: "as-withdraw small", onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api("POST", `/api/aftersales/${req.id}/withdraw`, { token, headers: { "X-Device-Id": deviceId() } });
        } catch (e) {
          part.append(el("span", { class: "error" }, explain(e)));
        }
        await reopen();
      } }, "撤回 · Withdraw"));
    }
  }
  const busy = req && (req.state === "open" || req.state === "approved");
  if (["paid", "shipped"].includes(o.state) && left(o) > 0 && !busy) {
    part.append(el("button", { type: "button", class: "as-ask", onclick: () => askForm(o, { token, reopen }) }, "申请售后 / After-sales"));
  }
  return part;
}

function options(map, allowed) {
  return Object.entries(map).filter(([k]) => allowed.includes(k)).map(([k, v]) => el("option", { value: k }, v));
}

// The small form asking for after-sales of order `o`; back to the bag when it is sent.
export function askForm(o, { token, reopen, title = "" }) {
  const kinds = o.state === "shipped" ? ["refund_only", "return_refund"] : ["refund_only"];
  const most = left(o);
  const kind = el("select", { id: "as-kind" }, ...options(KINDS, kinds));
  const reason = el("select", { id: "as-reason" }, ...options(REASONS, Object.keys(REASONS)));
  const text = el("textarea", { id: "as-text", maxlength: 500, rows: 3, placeholder: "补充说明（选填） · tell us more (optional)" });
  const amount = el("input", { id: "as-amount", type: "number", inputmode: "decimal", min: 0.01, step: 0.01, max: (most / 100).toFixed(2), value: (most / 100).toFixed(2) });
  const error = el("p", { class: "error", id: "as-error" });
  const send = el("button", { class: "primary", id: "as-submit", type: "button" }, "提交申请 · Send request");
  openSheet(
    el("h3", {}, "申请售后 · After-sales"),
    el("p", { class: "small" }, `${title || `订单 · order ${o.id}`} · ${yuan(o.amount_fen)}${o.refunded_fen ? ` · 已退 ${yuan(o.refunded_fen)}` : ""}`),
    el("label", {}, "类型 · Kind", kind),
    el("label", {}, "原因 · Reason", reason),
    el("label", {}, "说明 · Details", text),
    el("label", {}, `退款金额 · Amount (最多 · up to ${yuan(most)})`, amount),
    error,
    send,
  );
  send.addEventListener("click", async () => {
    error.textContent = "";
    const fen = Math.round(Number(amount.value) * 100);
    if (!(fen >= 1 && fen <= most)) {
      error.textContent = `金额应在 ¥0.01 到 ${yuan(most)} 之间 · the amount must be between ¥0.01 and ${yuan(most)}`;
      return;
    }
    const body = { kind: kind.value, reason: reason.value };
    if (text.value.trim()) body.text = text.value.trim();
    if (fen !== most) body.amount_fen = fen;
    send.disabled = true;
    try {
      await api("POST", `/api/orders/${o.id}/aftersales`, { token, body, headers: { "X-Device-Id": deviceId() } });
    } catch (e) {
      error.textContent = explain(e);
      send.disabled = false;
      return;
    }
    await reopen();
  });
}
