// Replays: every recorded broadcast with its state, length and size; one replay's player
// page (MP4 natively, or the HLS playlist through hls.js) with its product clips, each a
// jump point.
import { h, badge, fmtBytes, fmtDuration, fmtTime, table } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { onLeave } from "../lib/view.js";
import { productLabel, productMap } from "../lib/names.js";

export async function replaysView(main) {
  const page = await api("GET", "/api/replays?limit=100");
  const rows = (page.items || []).map((r) => h("tr", { class: "row", dataset: { replay: r.id }, onclick: () => { location.hash = `#/replays/${encodeURIComponent(r.id)}`; } },
    h("td", {}, fmtTime(r.created)), h("td", {}, r.broadcast_id ? h("a", { href: `#/b/${r.broadcast_id}`, onclick: (e) => e.stopPropagation() }, `#${r.broadcast_id}`) : h("span", { class: "muted" }, `${r.app}/${r.stream}`)),
    h("td", {}, badge(r.state)), h("td", {}, fmtDuration(r.duration)), h("td", {}, fmtBytes(r.size)), h("td", {}, (r.clips || []).length),
    h("td", {}, r.hls || r.mp4 ? h("a", { href: `#/replays/${encodeURIComponent(r.id)}` }, "watch") : h("span", { class: "muted" }, r.error || "processing…"))));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Replays"),
    table(["Recorded", "Broadcast", "State", "Length", "Size", "Clips", ""], rows, "No replays yet.", { id: "replays" })));
}

let hlsPlayer = null;

/** Play the replay's MP4, or its HLS playlist (natively, else through hls.js). */
async function attach(video, r, kind) {
  hlsPlayer?.destroy(); hlsPlayer = null;
  video.removeAttribute("src");
  if (kind === "mp4") { video.src = r.mp4; return "MP4"; }
  if (video.canPlayType("application/vnd.apple.mpegurl")) { video.src = r.hls; return "HLS (native)"; }
  const Hls = (await import("/console/node_modules/hls.js/dist/hls.min.mjs")).default;
  if (!Hls.isSupported()) throw new Error("this browser cannot play HLS");
  hlsPlayer = new Hls();
  hlsPlayer.loadSource(r.hls);
  hlsPlayer.attachMedia(video);
  return "HLS (hls.js)";
}

export async function replayView(main, id) {
  const r = await api("GET", `/api/replays/${encodeURIComponent(id)}`);
  const products = await productMap();
  const video = h("video", { id: "replay-video", controls: true, playsinline: true, poster: r.cover || undefined });
  const status = h("p", { class: "muted", id: "replay-status" });
  const play = async (kind) => {
    try { status.textContent = `Playing ${await attach(video, r, kind)}`; } catch (e) { status.textContent = e.message; }
  };
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, `Replay ${r.id}`), badge(r.state)),
    h("p", { class: "muted" }, r.broadcast_id ? h("a", { href: `#/b/${r.broadcast_id}` }, `Broadcast #${r.broadcast_id}`) : `${r.app}/${r.stream}`,
      ` · recorded ${fmtTime(r.created)} → ${fmtTime(r.ended)} · ${fmtDuration(r.duration)} · ${fmtBytes(r.size)} · ${r.parts} part(s)`),
    video, status,
    h("div", { class: "row-actions" },
      r.mp4 && r.hls ? h("button", { type: "button", class: "secondary", id: "play-mp4", onclick: () => play("mp4") }, "Play MP4") : null,
      r.mp4 && r.hls ? h("button", { type: "button", class: "secondary", id: "play-hls", onclick: () => play("hls") }, "Play HLS") : null,
      r.mp4 ? h("a", { class: "button secondary", href: r.mp4, download: "" }, "Download MP4") : null,
      r.hls ? h("a", { class: "button secondary", href: r.hls, target: "_blank", rel: "noopener" }, "HLS playlist") : null,
      isOperator() && r.state !== "recording" ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Delete this replay and its files?")) return;
        try { await api("DELETE", `/api/replays/${encodeURIComponent(r.id)}`); location.hash = "#/replays"; } catch (e) { status.textContent = e.message; }
      } }, "Delete replay") : null)),
  h("section", { class: "card" }, h("h3", {}, "Product clips"),
    table(["Product", "At", "Length", "Clip"], (r.clips || []).map((c) => h("tr", {},
      h("td", {}, productLabel(products, c.product_id)),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => { video.currentTime = c.start; video.play(); } }, fmtDuration(c.start))),
      h("td", {}, fmtDuration(c.duration)), h("td", {}, h("a", { href: c.url, target: "_blank", rel: "noopener" }, "MP4")))), "No product clips.")));
  onLeave(() => { hlsPlayer?.destroy(); hlsPlayer = null; });
  if (!r.hls && !r.mp4) { status.textContent = r.error || "Not playable yet."; return; }
  await play(r.mp4 ? "mp4" : "hls");
}
