// The viewer page of /watch/APP/STREAM: assembles the player, the room, the shop, lotteries
// and the replay (one module each). No build step: the browser loads these ES modules as
// they are, and the npm packages from /viewer/vendor/.

import { api, shareToken, Viewer, toast } from "./api.js";
import { Room } from "./chat.js";
import { Lotteries } from "./lottery.js";
import { LivePlayer } from "./player.js";
import { Replay } from "./replay.js";
import { Shop } from "./shop.js";

const OVER = new Set(["ended", "replay_ready", "cancelled", "banned"]);
const STATE_TEXT = {
  scheduled: "未开播 · Soon",
  live: "直播中 · LIVE",
  interrupted: "暂停 · Paused",
  ended: "已结束 · Ended",
  replay_ready: "回放 · Replay",
  cancelled: "已取消 · Cancelled",
  banned: "已下架 · Unavailable",
};

function setStatus(state) {
  const badge = document.getElementById("status");
  badge.textContent = STATE_TEXT[state] || state || "";
  badge.classList.toggle("off", state !== "live");
  document.body.dataset.broadcast = state || "none";
}

function away(show, title, sub) {
  const box = document.getElementById("away");
  box.hidden = !show;
  if (title) document.getElementById("away-title").textContent = title;
  if (sub !== undefined) document.getElementById("away-sub").textContent = sub;
}

async function main() {
  const parts = location.pathname.split("/").filter(Boolean); // watch, APP, STREAM
  const app = decodeURIComponent(parts[1] || "");
  const stream = decodeURIComponent(parts[2] || "");
  const info = await api("GET", `/api/watch/${encodeURIComponent(app)}/${encodeURIComponent(stream)}`);
  const b = info.broadcast;
  document.getElementById("title").textContent = b ? b.title : `${app}/${stream}`;
  document.title = `${b ? b.title : stream} · 直播`;
  setStatus(b ? b.state : "live");

  const viewer = new Viewer(info.room);
  await viewer.obtain(info);
  const video = document.getElementById("video");
  if (b && b.cover_url) video.poster = b.cover_url;
  const shop = new Shop({ broadcastId: b ? b.id : null, viewer, share: shareToken(info.room) });
  shop.shareVisit();
  const shareButton = document.getElementById("share");
  shareButton.hidden = b ? !b.sharing : false;
  shareButton.addEventListener("click", () => shop.shareLink());
  const replay = b ? new Replay({ broadcastId: b.id, video, shop }) : null;
  const state = { broadcast: b ? b.state : null };
  const exposed = { info, viewer, shop, replay, state };
  window.berrylive = exposed;

  // Before the show: the go-live reminder (POST /api/broadcasts/{id}/reminders, as this viewer).
  const remind = document.getElementById("remind");
  remind.addEventListener("click", async () => {
    remind.disabled = true;
    try {
      await api("POST", `/api/broadcasts/${b.id}/reminders`, { token: viewer.token, body: {} });
      remind.dataset.done = "1";
      remind.textContent = "✓ 已预约 · We will remind you";
    } catch (e) {
      remind.disabled = false;
      toast(e.message);
    }
  });

  const unmute = document.getElementById("unmute");
  unmute.addEventListener("click", () => {
    video.muted = false;
    video.play().catch(() => {});
    unmute.hidden = true;
  });

  if (b && OVER.has(b.state)) {
    document.body.dataset.phase = "replay";
    const input = document.getElementById("comment-input");
    input.disabled = true;
    input.placeholder = "直播已结束 · The show is over";
    document.getElementById("send").hidden = true;
    document.getElementById("like").hidden = true;
    away(false);
    await shop.load();
    await replay.show();
    return;
  }

  const player = new LivePlayer(video, {
    hls: info.play.hls,
    flv: new URL(info.play.flv, location.href).href,
    whep: info.play.whep,
    onState(s) {
      if (s === "playing") {
        away(false);
        remind.hidden = true;
        unmute.hidden = !video.muted;
      } else if (s === "away") {
        const before = state.broadcast === "scheduled";
        const at = before && b && b.scheduled_start ? new Date(b.scheduled_start) : null;
        const when = at && at > new Date()
          ? ` · ${at.toLocaleString([], { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" })}`
          : "";
        away(true, before ? `直播即将开始${when}` : "主播马上回来", before ? "The show starts soon" : "The anchor will be right back");
        remind.hidden = !(before && b && viewer.token);
      }
    },
  });
  exposed.player = player;
  document.body.dataset.phase = "live";
  player.start();

  const lotteries = new Lotteries({ room: null, viewer, shop });
  const room = new Room({
    room: info.room,
    viewer,
    onJoined(j) {
      lotteries.joined(j.lotteries);
    },
    onWon(w) {
      lotteries.won(w);
    },
    async onNotice(n) {
      if (n.type === "live_start") {
        state.broadcast = "live";
        setStatus("live");
        player.wake();
      } else if (n.type === "live_end") {
        player.gone();
        // The publisher left: the player shows the away card by itself; the broadcast may
        // be over (then the replay follows) or only interrupted.
        setTimeout(() => checkOver(), 3000);
      } else if (n.type === "announcement") {
        toast(`📢 ${n.data?.text || ""}`, 5000);
        room.note(`📢 ${n.data?.text || ""}`);
      } else if (n.type === "lottery" || n.type === "lottery_entry") {
        lotteries.notice(n);
      } else {
        await shop.notice(n);
      }
    },
  });
  if (b) room.settings(b);
  lotteries.room = room;
  exposed.room = room;
  exposed.lotteries = lotteries;
  room.connect();
  await shop.load();

  async function checkOver() {
    try {
      const now = await api("GET", `/api/watch/${encodeURIComponent(app)}/${encodeURIComponent(stream)}`);
      const s = now.broadcast?.state;
      if (s) {
        state.broadcast = s;
        setStatus(s);
      }
      if (s && OVER.has(s)) {
        player.stop();
        away(false);
        shop.hideCard();
        document.getElementById("lottery").hidden = true;
        await replay?.show();
        return true;
      }
    } catch (e) {
      console.warn(e);
    }
    return false;
  }
  // The end of a broadcast reaches the room as live_end; a page that missed it (asleep, or
  // the anchor ended it while away) finds out here.
  setInterval(() => { if (player.state === "away") checkOver(); }, 15_000);
}

main().catch((e) => {
  console.error(e);
  document.getElementById("title").textContent = "出错了 · Something went wrong";
  document.body.dataset.phase = "error";
});
