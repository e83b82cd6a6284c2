// The push URL card of a broadcast: URL (copy), OBS server/key, QR code, rotate, revoke.
import { h, $, fmtTime, toast } from "../lib/dom.js";
import { api, isOperator } from "../lib/api.js";
import { onLeave } from "../lib/view.js";

export function pushCard(getB, setB) {
  const el = h("section", { class: "card", id: "push" }, h("h3", {}, "Push URL"));
  let qrUrl = null;
  onLeave(() => { if (qrUrl) URL.revokeObjectURL(qrUrl); });
  const rotate = async () => {
    if (!confirm("Issue a new key? The current URL stops working and a live publisher is cut.")) return;
    try { await api("POST", `/api/broadcasts/${getB().id}/push/rotate`); setB(await api("GET", `/api/broadcasts/${getB().id}`)); await render(); toast("New push key issued"); }
    catch (e) { toast(e.message); }
  };
  const revoke = async () => {
    if (!confirm("Revoke the push key? A live publisher is cut at once.")) return;
    try { setB(await api("POST", `/api/broadcasts/${getB().id}/push/revoke`)); await render(); toast("Push key revoked"); }
    catch (e) { toast(e.message); }
  };
  const render = async () => {
    const b = getB();
    if (!["scheduled", "live", "interrupted"].includes(b.state)) { el.hidden = true; return; }
    el.hidden = false;
    let p;
    try { p = await api("GET", `/api/broadcasts/${b.id}/push`); }
    catch (e) {
      el.replaceChildren(h("h3", {}, "Push URL"), h("p", { class: "error" }, e.message),
        h("button", { type: "button", onclick: rotate }, "Issue a new key"));
      return;
    }
    const blob = await (await api("GET", p.qr_png, undefined, true)).blob();
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = URL.createObjectURL(blob);
    el.replaceChildren(h("h3", {}, "Push URL"),
      h("div", { class: "grid" },
        h("div", {},
          h("label", {}, "RTMP push URL (mini-program, ffmpeg)", h("input", { id: "push-url", readonly: true, value: p.url, class: "mono" })),
          h("label", {}, "OBS server", h("input", { readonly: true, value: p.server, class: "mono" })),
          h("label", {}, "OBS stream key", h("input", { readonly: true, value: p.stream_key, class: "mono" })),
          h("p", { class: "muted" }, `Valid ${fmtTime(p.not_before)} → ${fmtTime(p.expires_at)}`),
          h("div", { class: "row-actions" },
            h("button", { type: "button", id: "copy-push", onclick: async () => {
              try { await navigator.clipboard.writeText(p.url); toast("Push URL copied"); }
              catch { $("#push-url").select(); document.execCommand("copy"); toast("Push URL copied"); }
            } }, "Copy push URL"),
            h("button", { type: "button", class: "secondary", onclick: rotate }, "Rotate key"),
            isOperator() ? h("button", { type: "button", class: "danger", onclick: revoke }, "Revoke") : null)),
        h("div", { id: "qr" }, h("img", { src: qrUrl, alt: "QR code of the push URL" }),
          h("p", { class: "muted" }, "The anchor scans this in the mini-program."))));
  };
  return { el, render };
}
