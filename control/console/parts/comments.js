// The room's comments with delete/mute: history from the hub's `joined` event (so a reload
// shows what was said), then the live batches.
import { h, $, fmtTime, toast } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { onLeave } from "../lib/view.js";

export function commentsCard() {
  return h("section", { class: "card", id: "comments-card" }, h("h3", {}, "Comments"),
    h("ul", { id: "comments" }), h("p", { class: "muted", id: "comments-status" }, "Connecting…"));
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
      h("button", { type: "button", class: "secondary", onclick: () => moderate({ action: "mute", user_id: c.user, duration_s: 600 }) }, "mute 10 min")));
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
