// After the broadcast: the replay (HLS VOD through hls.js, or natively) and its per-product
// clips ("讲解回放"): each jumps to the moment the product was explained and has its buy
// button (docs/replay.md).

import { api, el } from "./api.js";
import { playVod } from "./player.js";

const POLL_MS = 5_000;

export class Replay {
  constructor({ broadcastId, video, shop }) {
    this.bid = broadcastId;
    this.video = video;
    this.shop = shop;
    this.handle = null;
    this.shown = null;
  }

  async show() {
    const box = document.getElementById("replay");
    const status = document.getElementById("replay-status");
    box.hidden = false;
    document.body.dataset.phase = "replay";
    for (;;) {
      let rep = null;
      try {
        const list = await api("GET", `/api/replays?broadcast_id=${this.bid}&limit=1`);
        rep = (list.items || [])[0] || null;
      } catch (e) {
        console.warn("replays", e);
      }
      if (rep && rep.state === "ready" && rep.hls) return this.play(rep);
      if (rep && rep.state === "failed") {
        status.textContent = "回放不可用 · no replay";
        return;
      }
      status.textContent = rep ? "回放生成中… · the replay is being prepared" : "暂无回放 · no replay yet";
      if (!rep && this.triedOnce) return;
      this.triedOnce = !rep;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  async play(rep) {
    if (this.shown === rep.id) return;
    this.shown = rep.id;
    document.getElementById("replay-status").textContent = `时长 · ${Math.round(rep.duration)} s`;
    this.video.muted = true;
    this.video.controls = true;
    document.getElementById("unmute").hidden = true;
    this.handle = await playVod(this.video, rep.hls);
    const list = document.getElementById("clips");
    list.replaceChildren();
    for (const c of rep.clips || []) {
      const title = el("span", { class: "t" }, `商品 #${c.product_id}`);
      this.shop.product(c.product_id).then((p) => { title.textContent = p.title; }).catch(() => {});
      list.append(el("li", { "data-product-id": c.product_id },
        title,
        el("button", { type: "button", class: "seek", onclick: () => this.seek(c.start) }, "讲解回放 · Watch"),
        el("button", { type: "button", class: "buy", onclick: () => this.shop.buyProduct(c.product_id) }, "购买 · Buy")));
    }
    if (!(rep.clips || []).length) list.append(el("li", {}, el("span", { class: "t small" }, "本场没有讲解片段 · no product clips")));
  }

  seek(t) {
    this.video.currentTime = Math.max(0, Number(t) || 0);
    this.video.play().catch(() => {});
  }
}
