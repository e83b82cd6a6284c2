// The room: bullet comments flying over the video, the comment list and box, likes and the
// online count, over the danmaku hub's Socket.IO namespace /live (docs/danmaku.md).
// Websocket first (the hub's pre-framed fan-out), long-polling if a proxy refuses websockets.

import { io } from "/viewer/vendor/socket.io.esm.min.js";
import { el, toast } from "./api.js";

const MAX_LIST = 40;
const MAX_BULLETS = 60;
const LIKE_FLUSH_MS = 400;

export class Room {
  constructor({ room, viewer, onNotice, onJoined, onWon }) {
    this.room = room;
    this.viewer = viewer;
    this.onNotice = onNotice;
    this.onJoined = onJoined;
    this.onWon = onWon;
    this.lastId = null;
    this.likesTotal = 0;
    this.pendingLikes = 0;
    this.lanes = [];
    this.seen = new Set();
    this.list = document.getElementById("chat-list");
    this.layer = document.getElementById("danmaku");
  }

  connect() {
    const socket = io("/live", {
      transports: ["websocket", "polling"],
      auth: (cb) => cb({ room: this.room, token: this.viewer.token || undefined, last_id: this.lastId || undefined }),
      reconnectionDelayMax: 5000,
    });
    this.socket = socket;
    socket.on("connect_error", (err) => {
      const code = err?.data?.code;
      if (code === "token_expired" || code === "bad_token" || code === "bad_signature") {
        this.viewer.forget(); // read-only from now on; a reload asks for a new token
        toast("登录已过期，请刷新 · Token expired, reload");
      } else if (code === "banned") {
        toast("你已被禁言 · You are banned in this room", 5000);
        socket.disconnect();
      }
    });
    socket.on("joined", (j) => {
      document.body.dataset.room = "joined";
      this.roomState(j);
      this.setLikes(j.likes_total);
      this.setOnline(j.online);
      for (const c of j.history || []) this.show(c, { fly: false });
      this.onJoined?.(j);
    });
    socket.on("comments", (b) => this.batch(b));
    socket.on("lottery_won", (w) => this.onWon?.(w));
    socket.on("rejected", (r) => this.refused(r));
    socket.on("moderated", (m) => toast(`${m.action === "mute" ? "你已被禁言 · muted" : m.action}`, 4000));
    socket.on("kicked", () => toast("你已被移出直播间 · removed from the room", 5000));
    this.bindBox();
    return socket;
  }

  batch(b) {
    for (const c of b.comments || []) this.show(c, { fly: true });
    if (b.likes) this.setLikes(b.likes.total);
    if (b.presence) this.setOnline(b.presence.online);
    for (const id of b.deleted || []) {
      document.querySelectorAll(`[data-id="${CSS.escape(id)}"]`).forEach((n) => n.remove());
    }
    for (const n of b.notices || []) {
      if (n.type === "room_state") this.roomState(n.data || {});
      this.onNotice?.(n);
    }
  }

  show(c, { fly }) {
    if (!c || !c.id || this.seen.has(c.id)) return;
    this.seen.add(c.id);
    if (this.seen.size > 2000) this.seen = new Set([...this.seen].slice(-1000));
    this.lastId = c.id;
    const staff = c.role && c.role !== "viewer";
    const mine = this.viewer.user && c.user === this.viewer.user.uid;
    const item = el("li", { class: staff ? "staff" : "", "data-id": c.id },
      el("span", { class: "nick", text: `${c.nick || c.user}${staff ? " ★" : ""}` }),
      el("span", { class: "text", text: c.text }));
    this.list.append(item);
    while (this.list.children.length > MAX_LIST) this.list.firstElementChild.remove();
    if (fly) this.fly(c.text, { mine, staff, id: c.id });
  }

  note(text) {
    this.list.append(el("li", { class: "notice", text }));
    while (this.list.children.length > MAX_LIST) this.list.firstElementChild.remove();
  }

  // A bullet on the lane that frees up first (lanes are 28 px; a bullet needs its own width
  // of travel before the next may enter that lane).
  fly(text, { mine, staff, id }) {
    if (this.layer.childElementCount >= MAX_BULLETS || document.hidden) return;
    const height = this.layer.clientHeight || 200;
    const laneCount = Math.max(1, Math.floor(height / 28));
    const now = performance.now();
    while (this.lanes.length < laneCount) this.lanes.push(0);
    let lane = 0;
    for (let i = 1; i < laneCount; i++) if (this.lanes[i] < this.lanes[lane]) lane = i;
    const node = el("span", { class: `bullet${mine ? " mine" : ""}${staff ? " staff" : ""}`, "data-id": id, text });
    const duration = 7 + Math.min(4, text.length / 12);
    node.style.top = `${lane * 28}px`;
    node.style.setProperty("--dur", `${duration}s`);
    node.addEventListener("animationend", () => node.remove());
    this.layer.append(node);
    const width = this.layer.clientWidth || 360;
    const speed = (width + node.offsetWidth) / (duration * 1000);
    this.lanes[lane] = Math.max(now, this.lanes[lane]) + (node.offsetWidth + 24) / speed;
  }

  // room_muted / slow_mode_s from `joined` and `room_state` notices: said in the box.
  roomState(st) {
    const input = document.getElementById("comment-input");
    if (!this.viewer.token || this.commentsOff) return;
    if (st.room_muted) {
      input.placeholder = "全员禁言中 · The room is muted";
    } else if (st.slow_mode_s > 0) {
      input.placeholder = `慢速模式 ${st.slow_mode_s}s · Slow mode`;
    } else {
      input.placeholder = "说点什么… Say something";
    }
  }

  // The broadcast's settings: comments and likes can be switched off.
  settings({ comments, likes }) {
    if (comments === false) {
      this.commentsOff = true;
      const input = document.getElementById("comment-input");
      input.disabled = true;
      input.placeholder = "评论已关闭 · Comments are off";
      document.getElementById("send").disabled = true;
    }
    if (likes === false) document.getElementById("like").hidden = true;
  }

  setLikes(total) {
    if (typeof total !== "number") return;
    this.likesTotal = Math.max(total, this.likesTotal);
    document.getElementById("like-total").textContent = String(this.likesTotal + this.pendingLikes);
  }

  setOnline(n) {
    if (typeof n === "number") document.getElementById("online").textContent = String(n);
  }

  send(event, data) {
    return new Promise((resolve) => {
      if (!this.socket || !this.socket.connected) return resolve({ ok: false, error: { code: "offline" } });
      this.socket.timeout(10_000).emit(event, data, (err, ack) => {
        resolve(err ? { ok: false, error: { code: "timeout" } } : ack);
      });
    });
  }

  refused(r) {
    const msgs = {
      not_authenticated: "请先登录 · sign in to comment",
      rate_limited: "太快了 · slow down",
      slow_mode: `慢速模式 · slow mode (${r.retry_after ?? ""}s)`,
      muted: "你已被禁言 · you are muted",
      room_muted: "全员禁言中 · the room is muted",
      too_long: "太长了 · too long",
    };
    toast(msgs[r.code] || r.message || r.code);
  }

  bindBox() {
    const form = document.getElementById("bar");
    const input = document.getElementById("comment-input");
    if (!this.viewer.token) {
      input.placeholder = "登录后可评论 · Sign in to comment";
      input.disabled = true;
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      const ack = await this.send("comment", { text });
      if (ack?.ok === false && ack.error?.code !== "offline") {
        if (!input.value) input.value = text;
      } else if (ack?.ok === false) {
        input.value = text;
        toast("连接中… · reconnecting");
      }
      if (ack?.lottery) this.onNotice?.({ type: "lottery_entry", data: ack.lottery });
    });
    document.getElementById("like").addEventListener("click", () => {
      if (!this.viewer.token) return toast("登录后可点赞 · Sign in to like");
      this.pendingLikes += 1;
      this.setLikes(this.likesTotal);
      clearTimeout(this._likeTimer);
      this._likeTimer = setTimeout(() => this.flushLikes(), LIKE_FLUSH_MS);
    });
  }

  async flushLikes() {
    const n = Math.min(this.pendingLikes, 50);
    if (!n) return;
    this.pendingLikes -= n;
    const ack = await this.send("like", { count: n });
    if (ack?.ok) this.likesTotal += n; // the next batch's total confirms it
    this.setLikes(this.likesTotal);
    if (this.pendingLikes) this.flushLikes();
  }
}
