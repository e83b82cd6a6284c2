// The WS-FLV preview of a live broadcast (mpegts.js from node_modules).
import { h, $ } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { loadScript, onLeave } from "../lib/view.js";

export function previewCard(getB) {
  const start = async () => {
    const status = $("#preview-status");
    try {
      await loadScript("/console/node_modules/mpegts.js/dist/mpegts.js");
      const mpegts = window.mpegts;
      if (!mpegts.getFeatureList().mseLivePlayback) { status.textContent = "This browser cannot play FLV (no MSE)."; return; }
      const urls = await api("GET", `/api/broadcasts/${getB().id}/play`);
      const player = mpegts.createPlayer({ type: "flv", isLive: true, url: urls.ws_flv }, { enableStashBuffer: false, liveBufferLatencyChasing: true });
      player.attachMediaElement($("#preview"));
      player.load();
      player.play();
      status.textContent = `Playing ${urls.ws_flv}`;
      onLeave(() => { player.destroy(); });
    } catch (e) { status.textContent = e.message; }
  };
  return h("section", { class: "card", id: "preview-card" }, h("h3", {}, "Preview (WS-FLV)"),
    h("video", { id: "preview", muted: true, controls: true, playsinline: true }),
    h("div", { class: "row-actions" }, h("button", { type: "button", id: "preview-start", onclick: start }, "Play preview")),
    h("p", { class: "muted", id: "preview-status" }));
}
