// One broadcast: its head (state, times, cover, actions) and what fits its state: push URL,
// live figures, preview, card, lottery and comments while it can be live; the after-show
// summary (replay, MP4, clips, sales) once it ended.
import { h, badge, fmtTime, toast } from "../lib/dom.js";
import { api, isOperator, me } from "../lib/api.js";
import { every, onLeave } from "../lib/view.js";
import { userLabel, userNames } from "../lib/names.js";
import { pushCard } from "../parts/push.js";
import { figuresCard } from "../parts/figures.js";
import { previewCard } from "../parts/preview.js";
import { cardPicker } from "../parts/card-picker.js";
import { lotteryCard } from "../parts/lottery.js";
import { commentsCard, connectComments } from "../parts/comments.js";
import { afterShowCard } from "../parts/after-show.js";
import { editBroadcast, historyBox } from "../parts/edit-broadcast.js";

const LIVE_STATES = ["scheduled", "live", "interrupted"];

export function broadcastTabs(b, active) {
  const tab = (href, label, key) => h("a", { href, class: active === key ? "active" : "", dataset: { tab: key } }, label);
  return h("nav", { class: "tabs" },
    tab(`#/b/${b.id}`, "Overview", "overview"), tab(`#/b/${b.id}/room`, "Live room", "room"),
    tab(`#/b/${b.id}/shelf`, "Shelf", "shelf"), tab(`#/b/${b.id}/flash`, "Flash sales", "flash"),
    tab(`#/b/${b.id}/lotteries`, "Lotteries", "lotteries"), tab(`#/b/${b.id}/sharers`, "Sharers", "sharers"),
    tab(`#/orders?broadcast_id=${b.id}`, "Orders", "orders"));
}

export async function broadcastView(main, id) {
  let b = await api("GET", `/api/broadcasts/${id}`);
  const users = await userNames();
  const getB = () => b;
  const setB = (nb) => { b = nb; };
  const info = h("p", { class: "muted", id: "times" });
  const actions = h("div", { class: "row-actions", id: "actions" });
  const cover = h("div", { id: "cover" });
  const head = h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `#${b.id} ${b.title}`), h("span", { id: "state" })),
    broadcastTabs(b, "overview"), h("div", { class: "head" }, cover, h("div", { class: "grow" }, info, actions)));
  const push = pushCard(getB, setB);
  const figures = figuresCard();
  const picker = cardPicker(getB);
  const body = h("div", { id: "b-body" });
  const extras = h("div", { id: "b-extras" });
  main.replaceChildren(head, push.el, body, extras);
  const renderExtras = () => extras.replaceChildren(editBroadcast(b, (nb) => { b = nb; renderHead(); renderExtras(); }), historyBox(b));

  const renderCover = () => {
    cover.replaceChildren(b.cover_url ? h("img", { id: "cover-img", src: `${b.cover_url}?v=${encodeURIComponent(b.updated_at || "")}`, alt: "cover" }) : h("div", { class: "cover-empty muted" }, "no cover"));
  };
  const renderHead = () => {
    head.querySelector("#state").replaceChildren(badge(b.state));
    info.replaceChildren(
      `Start ${fmtTime(b.scheduled_start)} · end ${fmtTime(b.scheduled_end)}`,
      b.started_at ? ` · live since ${fmtTime(b.started_at)}` : "",
      b.ended_at ? ` · ended ${fmtTime(b.ended_at)}` : "",
      ` · anchor ${b.anchor_id ? userLabel(users, b.anchor_id) : "—"} · stream ${b.app}/${b.stream} · ${b.reminder_count} reminders`,
      b.ban_reason ? h("span", { class: "error" }, ` · banned: ${b.ban_reason}`) : "",
      " · ", h("a", { href: `/watch/${b.app}/${b.stream}`, target: "_blank", rel: "noopener", id: "viewer-link" }, "viewer page"));
    const act = (trigger, label, cls) => h("button", { type: "button", class: cls, dataset: { action: trigger }, onclick: async () => {
      const reason = trigger === "ban" ? prompt("Reason for the ban?") : "";
      if (trigger === "ban" && reason === null) return;
      if (trigger !== "ban" && !confirm(`${label}?`)) return;
      try { b = await api("POST", `/api/broadcasts/${b.id}/${trigger}`, reason ? { reason } : undefined); await renderAll(); }
      catch (e) { toast(e.message); }
    } }, label);
    const buttons = [];
    if (b.actions.includes("end")) buttons.push(act("end", "End broadcast", "secondary"));
    if (b.actions.includes("cancel") && isOperator()) buttons.push(act("cancel", "Cancel", "secondary"));
    if (b.actions.includes("ban") && isOperator()) buttons.push(act("ban", "Ban", "danger"));
    if (["scheduled", "cancelled"].includes(b.state) && isOperator()) {
      buttons.push(h("button", { type: "button", class: "danger", dataset: { action: "delete" }, onclick: async () => {
        if (!confirm(`Delete “${b.title}”?`)) return;
        try { await api("DELETE", `/api/broadcasts/${b.id}`); location.hash = "#/schedule"; } catch (e) { toast(e.message); }
      } }, "Delete"));
    }
    if (!["banned", "cancelled"].includes(b.state) && ["operator", "anchor"].includes(me()?.role)) {
      buttons.push(h("label", { class: "button secondary" }, "Upload cover", h("input", { type: "file", id: "cover-file", hidden: true, accept: "image/png,image/jpeg,image/webp", onchange: async (ev) => {
        const file = ev.target.files[0]; if (!file) return;
        try { b = await api("PUT", `/api/broadcasts/${b.id}/cover`, file); renderCover(); toast("Cover uploaded"); } catch (e) { toast(e.message); }
      } })));
    }
    actions.replaceChildren(...buttons);
    renderCover();
  };
  let shown = null;
  let comments = null;
  const renderBody = async () => {
    const live = LIVE_STATES.includes(b.state);
    // while it can be live the body stays; after the show it follows the state (ended,
    // then replay_ready brings the replay)
    const key = live ? "live" : b.state;
    if (key === shown) return;
    shown = key;
    comments?.close();
    const role = me()?.role;
    const sells = role === "operator" || role === "anchor"; // card, flash sales (shop roles)
    const moderates = role === "operator" || role === "moderator";
    if (live) {
      body.replaceChildren(h("div", { class: "grid" }, figures.el, previewCard(getB)),
        h("div", { class: "grid" }, sells ? picker.el : "", role === "operator" ? lotteryCard(getB) : "", commentsCard(b, moderates)));
      if (sells) picker.refresh().catch((e) => toast(e.message));
    } else {
      body.replaceChildren(await afterShowCard(b), h("div", { class: "grid" }, commentsCard(b, moderates)));
    }
    connectComments(b).then((socket) => { comments = socket; }).catch((e) => { const st = body.querySelector("#comments-status"); if (st) st.textContent = `Comments unavailable: ${e.message}`; });
  };
  const canPush = ["operator", "anchor"].includes(me()?.role);
  const renderAll = async () => { renderHead(); renderExtras(); if (canPush) await push.render(); else push.el.hidden = true; await renderBody(); };
  await renderAll();
  let tick = 0;
  let gone = false; // the page changed: an answer still on its way changes nothing
  onLeave(() => { gone = true; });
  every(2000, async () => {
    try {
      const nb = await api("GET", `/api/broadcasts/${b.id}`);
      if (gone) return;
      const changed = nb.state !== b.state;
      b = nb;
      if (changed) await renderAll();
      if (LIVE_STATES.includes(b.state)) {
        const stats = await api("GET", `/api/broadcasts/${b.id}/stats`);
        if (gone) return;
        figures.update(stats);
        if (++tick % 2 === 0 && canPush) await picker.refresh();
      }
    } catch (e) { if (e.status !== 401 && !gone) toast(e.message); }
  });
}
