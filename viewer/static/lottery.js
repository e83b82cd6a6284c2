// Lotteries in the room: entering (the button, or commenting the keyword), the result, and
// checking the draw in this browser from what the hub published (docs/danmaku.md, "Audit
// protocol"): sha256(seed) is the commitment announced at the start, the entrants' hash is
// sha256 of the sorted user ids, and the winners follow from sha256("seed:hash:i").

import { api, el, toast } from "./api.js";
import { openSheet } from "./sheet.js";

async function sha256(text, raw = false) {
  const buf = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const bytes = new Uint8Array(buf);
  if (raw) return bytes;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha1hex(text) {
  const buf = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function codeSort(a, b) {
  // Python sorts by code point; compare code points, not UTF-16 units.
  const x = Array.from(a), y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

// Recompute the winners of a drawn lottery (GET /api/danmaku/lotteries/{id}?entrants=1).
export async function verifyDraw(audit) {
  if (!crypto.subtle) throw new Error("这个页面不是安全来源（HTTPS），无法在浏览器中验证 · needs HTTPS");
  if ((await sha256(audit.seed)) !== audit.commitment) throw new Error("seed ≠ commitment");
  const total = (audit.prizes || []).reduce((n, p) => n + Number(p.stock || 0), 0);
  if (audit.mode === "timed") {
    const pool = [...new Set(audit.entrants || [])].sort(codeSort);
    const digest = await sha256(pool.join("\n"));
    if (digest !== audit.entrants_hash) throw new Error("entrants ≠ entrants_hash");
    const winners = [];
    const rounds = Math.min(total, pool.length); // the pool shrinks as winners leave it
    for (let i = 0; i < rounds; i++) {
      const h = await sha256(`${audit.seed}:${digest}:${i}`, true);
      let n = 0n;
      for (const b of h) n = (n << 8n) | BigInt(b);
      winners.push(pool.splice(Number(n % BigInt(pool.length)), 1)[0]);
    }
    return winners;
  }
  const p = Number(audit.probability);
  const winners = [];
  for (const u of audit.entry_order || []) {
    const h = await sha1hex(`${audit.seed}:${u}`);
    if (parseInt(h.slice(0, 8), 16) / 16 ** 8 < p) winners.push(u);
  }
  return winners.slice(0, total);
}

export class Lotteries {
  constructor({ room, viewer, shop }) {
    this.room = room;
    this.viewer = viewer;
    this.shop = shop;
    this.open = new Map(); // lottery_id -> info
    this.current = null;
    this.box = document.getElementById("lottery");
    this._tick = null;
    document.getElementById("lottery-enter").addEventListener("click", () => this.enter());
  }

  joined(list) {
    for (const l of list || []) this.opened(l);
  }

  notice(n) {
    if (n.type === "lottery_entry") return this.entered(n.data);
    if (n.type !== "lottery") return;
    const d = n.data || {};
    if (d.event === "open") this.opened(d);
    else if (d.event === "closed") this.status(d.lottery_id, `已截止，${d.entrants} 人参与，开奖中… · closed, drawing`);
    else if (d.event === "drawn") this.drawn(d);
    else if (d.event === "cancelled") this.finish(d.lottery_id, "已取消 · cancelled");
  }

  opened(info) {
    this.open.set(info.lottery_id, info);
    this.current = info;
    this.box.hidden = false;
    this.box.dataset.lotteryId = info.lottery_id;
    document.getElementById("lottery-title").textContent = info.title || (info.prizes || []).map((p) => p.name).join(" / ");
    const how = document.getElementById("lottery-how");
    const btn = document.getElementById("lottery-enter");
    if (info.entry === "keyword") {
      how.textContent = `评论「${info.keyword}」参与 · comment the keyword`;
      btn.textContent = `发送「${info.keyword}」· Send`;
    } else {
      how.textContent = "点击按钮参与 · tap to enter";
      btn.textContent = "参与抽奖 · Enter";
    }
    btn.disabled = false;
    document.getElementById("lottery-status").textContent = "";
    clearInterval(this._tick);
    const cd = document.getElementById("lottery-countdown");
    const draw = () => {
      const s = Math.max(0, Math.round(info.window_end - Date.now() / 1000));
      cd.textContent = s > 0 ? `${s}s 后开奖 · draw in ${s}s` : "开奖中 · drawing";
    };
    draw();
    this._tick = setInterval(draw, 1000);
  }

  status(id, text) {
    if (this.current && this.current.lottery_id === id) document.getElementById("lottery-status").textContent = text;
  }

  async enter() {
    const l = this.current;
    if (!l) return;
    if (!this.viewer.token) return toast("登录后可参与 · Sign in to enter");
    const btn = document.getElementById("lottery-enter");
    btn.disabled = true;
    let ack;
    if (l.entry === "keyword") ack = await this.room.send("comment", { text: l.keyword });
    else ack = await this.room.send("lottery_enter", { lottery_id: l.lottery_id });
    if (ack?.ok === false) {
      btn.disabled = false;
      return toast(ack.error?.message || ack.error?.code || "失败 · failed");
    }
    this.entered(l.entry === "keyword" ? ack.lottery : ack);
  }

  entered(r) {
    if (!r || !r.lottery_id) return;
    const texts = {
      entered: "已参与，等待开奖 · entered, good luck",
      duplicate: "已参与过 · already entered",
      won: `中奖了：${r.prize?.name || ""} · you won`,
      closed: "已截止 · closed",
    };
    document.getElementById("lottery-enter").disabled = true;
    this.status(r.lottery_id, texts[r.status] || r.status);
  }

  drawn(d) {
    const me = this.viewer.user?.uid;
    const mine = (d.winners || []).find((w) => w.user_id === me);
    const text = mine ? `🎉 恭喜中奖：${mine.prize} · You won!` : (d.winners || []).length ? "很遗憾，未中奖 · Not this time" : "无人中奖 · no winner";
    this.finish(d.lottery_id, text);
    const info = this.open.get(d.lottery_id) || { title: "" };
    const list = el("ol", { id: "lottery-winners" }, (d.winners || []).map((w) => el("li", {}, `${w.nick || w.user_id} — ${w.prize}`)));
    const result = el("p", { id: "lottery-verify-result", class: "small" });
    const link = el("a", { id: "lottery-verify-link", href: `/api/danmaku/lotteries/${encodeURIComponent(d.lottery_id)}?entrants=1`, target: "_blank", rel: "noopener" }, "开奖数据 · draw data (JSON)");
    const check = el("button", { type: "button", class: "primary", id: "lottery-verify" }, "验证开奖 · Verify the draw");
    const prizeBox = el("div");
    check.addEventListener("click", async () => {
      result.textContent = "…";
      try {
        const audit = await api("GET", `/api/danmaku/lotteries/${encodeURIComponent(d.lottery_id)}?entrants=1`);
        const again = await verifyDraw(audit);
        const published = (audit.winners || []).map((w) => w.user_id);
        const same = again.length === published.length && again.every((u, i) => u === published[i]);
        result.className = same ? "ok" : "error";
        result.textContent = same ? `✓ 验证通过 · verified: ${again.length} winner(s) follow from the seed` : "✗ 不一致 · the winners do not follow from the seed";
      } catch (e) {
        result.className = "error";
        result.textContent = e.message;
      }
    });
    openSheet(
      el("h3", { id: "lottery-result", "data-lottery-id": d.lottery_id }, `开奖 · Draw: ${info.title || ""}`),
      el("p", { class: mine ? "ok" : "" }, text),
      list,
      el("p", { class: "small" }, "承诺 · commitment ", el("code", { class: "hash" }, d.commitment || "")),
      el("p", { class: "small" }, "种子 · seed ", el("code", { class: "hash" }, d.seed || "")),
      link,
      check,
      result,
      prizeBox,
    );
    if (mine) this.shop?.claimPrizes(prizeBox);
  }

  finish(id, text) {
    this.open.delete(id);
    this.status(id, text);
    if (this.current && this.current.lottery_id === id) {
      clearInterval(this._tick);
      document.getElementById("lottery-countdown").textContent = "";
      document.getElementById("lottery-enter").disabled = true;
      setTimeout(() => {
        if (this.current && this.current.lottery_id === id) {
          this.current = null;
          this.box.hidden = true;
        }
      }, 30_000);
    }
  }

  won(w) {
    toast(`🎉 恭喜中奖：${w.prize?.name || ""} · You won`, 6000);
    // an instant lottery has no "drawn" sheet for each winner: the claim opens its own
    const info = this.open.get(w.lottery_id);
    if (info && info.mode === "instant") this.shop?.claimPrizes();
  }
}
