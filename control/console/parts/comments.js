// The room's comments with delete/mute: history from the hub's `joined` event (so a reload
// shows what was said), then the live batches.
import { h, $, fmtTime, statusLine, toast } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { onLeave } from "../lib/view.js";

/** The comments of the room, and (for operators and moderators) the room's controls:
 * an announcement, slow mode, muting the whole room. */
export function commentsCard(b, canModerate) {
  const room = `${b.app}/${b.stream}`;
  const status = statusLine("moderation-status");
  const moderate = async (body, done) => {
    try { await api("POST", "/api/danmaku/moderation", { room, ...body }); status.ok(done); }
    catch (e) { status.fail(e); }
  };
  const controls = canModerate ? h("div", { class: "room-controls" },
    h("form", { class: "row-actions", id: "announce-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const text = new FormData(ev.target).get("text");
      try { await api("POST", "/api/danmaku/notices", { room, text }); status.ok("Announcement posted"); ev.target.reset(); }
      catch (e) { status.fail(e); }
    } }, h("input", { name: "text", required: true, maxlength: 200, placeholder: "announcement to the room", class: "grow" }), h("button", { type: "submit" }, "Announce")),
    h("div", { class: "row-actions" },
      h("select", { id: "slow-mode", onchange: (e) => moderate({ action: "slow_mode", duration_s: Number(e.target.value) }, Number(e.target.value) ? `Slow mode: one comment per ${e.target.value} s` : "Slow mode off") },
        ...[0, 3, 10, 30, 60].map((n) => h("option", { value: n }, n ? `slow mode ${n} s` : "slow mode off"))),
      h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "room_mute" }, "Room muted: only staff can comment") }, "Mute room"),
      h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "room_unmute" }, "Room unmuted") }, "Unmute room")),
    status) : null;
  return h("section", { class: "card", id: "comments-card" }, h("h3", {}, "Comments"),
    h("ul", { id: "comments" }), h("p", { class: "muted", id: "comments-status" }, "Connecting…"), controls);
}

export async function connectComments(b) {
  const room = `${b.app}/${b.stream}`;
  const { io } = await import("/console/node_modules/socket.io-client/dist/socket.io.esm.min.js");
  const t = await api("POST", `/api/broadcasts/${b.id}/danmaku-token`);
  let lastId = null;
  const socket = io("/live", { auth: (cb) => cb({ room: t.room, token: t.token, ...(lastId ? { last_id: lastId } : {}) }), transports: ["websocket"] });
  onLeave(() => socket.close());
  const list = $("#comments");
  const status = $("#comments-status");
  const moderate = async (body) => {
    try { await api("POST", "/api/danmaku/moderation", { room, ...body }); toast(`${body.action} done`); }
    catch (e) { toast(e.message); }
  };
  const add = (c) => {
    if (list.querySelector(`li[data-id="${CSS.escape(c.id)}"]`)) return;
    lastId = c.id;
    list.append(h("li", { dataset: { id: c.id }, title: fmtTime(new Date(c.ts).toISOString()) },
      h("b", {}, c.nick || c.user), h("span", { class: "grow" }, c.text),
      h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "delete", comment_id: c.id }) }, "delete"),
      h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "mute", user_id: c.user, duration_s: 600 }) }, "mute 10 min"),
      h("button", { type: "button", class: "secondary", onclick: () => { if (confirm(`Ban ${c.nick || c.user} from this room?`)) moderate({ action: "ban", user_id: c.user, reason: "banned from the console" }); } }, "ban")));
  };
  const trim = () => { while (list.children.length > 300) list.firstChild.remove(); list.scrollTop = list.scrollHeight; };
  socket.on("joined", (j) => {
    for (const c of j.history || []) add(c);
    trim();
    status.textContent = `Room ${room}: ${j.online ?? 0} online, ${j.likes_total ?? 0} likes${j.gap ? " (some comments were missed)" : ""}`;
  });
  socket.on("connect_error", (e) => { status.textContent = `Comments: ${e.message}`; });
  socket.on("comments", (batch) => {
    for (const c of batch.comments || []) add(c);
    for (const id of batch.deleted || []) list.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
    if (batch.presence) status.textContent = `Room ${room}: ${batch.presence.online} online`;
    trim();
  });
  return socket;
}
