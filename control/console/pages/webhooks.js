// Webhooks: subscriptions (URL, event patterns, active), the secret shown once (creation, rotation),
// the delivery log of each with retry, and a test ping.
import { h, badge, fmtTime, statusLine, table } from "../lib/dom.js";
import { api } from "../lib/api.js";

const TOPICS = "broadcast.*, order.paid, order.*, flash_sale.*, card.*, lottery.prize, replay.ready, refund.completed, aftersales.*";

export async function webhooksView(main) {
  const status = statusLine("webhooks-status");
  const list = h("div", { id: "webhooks" });
  const log = h("div", { id: "deliveries" });
  const secret = h("div", { id: "webhook-secret" });
  const showLog = async (w) => {
    const r = await api("GET", `/api/webhooks/${w.id}/deliveries?limit=100`);
    log.replaceChildren(h("h3", {}, `Deliveries of #${w.id} ${w.url}`), table(["Id", "Topic", "Event", "Status", "Attempts", "Last", "Created", "Delivered", ""],
      (r.items || []).map((d) => h("tr", { dataset: { delivery: d.id } },
        h("td", {}, d.id), h("td", {}, d.topic), h("td", { class: "mono" }, d.event_id), h("td", {}, badge(d.status)), h("td", {}, d.attempts),
        h("td", {}, d.last_status ?? "", d.last_error ? h("span", { class: "muted" }, ` ${d.last_error}`) : ""),
        h("td", {}, fmtTime(d.created_at)), h("td", {}, fmtTime(d.delivered_at)),
        h("td", {}, h("button", { type: "button", class: "secondary", onclick: async () => {
          try { await api("POST", `/api/webhooks/${w.id}/deliveries/${d.id}/retry`); status.ok(`Delivery ${d.id} queued again`); await showLog(w); } catch (e) { status.fail(e); }
        } }, "Retry")))), "No delivery yet."));
  };
  // the signing secret is shown once: in the answer of its creation or rotation
  const showSecret = (w) => secret.replaceChildren(
    h("p", { class: "ok" }, `Signing secret of #${w.id}: copy it now, it is not shown again (receivers check X-Berrylive-Signature with it).`),
    h("input", { readonly: true, class: "mono", value: w.secret ?? "" }));
  const refresh = async () => {
    const r = await api("GET", "/api/webhooks?limit=100");
    list.replaceChildren(table(["Id", "URL", "Events", "Active", "Secret", "Created", ""], (r.items || []).map((w) => h("tr", { dataset: { webhook: w.id } },
      h("td", {}, w.id), h("td", { class: "mono" }, w.url, w.description ? h("div", { class: "muted" }, w.description) : null), h("td", {}, w.events.join(", ")),
      h("td", {}, w.active ? badge("active") : badge("paused")), h("td", { class: "mono" }, w.secret_hint ?? "—"), h("td", {}, fmtTime(w.created_at)),
      h("td", {}, h("div", { class: "row-actions" },
        h("button", { type: "button", class: "secondary", onclick: () => showLog(w).catch((e) => status.fail(e)) }, "Deliveries"),
        h("button", { type: "button", class: "secondary", onclick: async () => { try { await api("POST", `/api/webhooks/${w.id}/ping`); status.ok(`Ping sent to #${w.id}`); await showLog(w); } catch (e) { status.fail(e); } } }, "Ping"),
        h("button", { type: "button", class: "secondary", onclick: async () => { try { await api("PATCH", `/api/webhooks/${w.id}`, { active: !w.active }); await refresh(); } catch (e) { status.fail(e); } } }, w.active ? "Pause" : "Resume"),
        h("button", { type: "button", class: "secondary", onclick: async () => {
          if (!confirm(`New signing secret for #${w.id}? Receivers must switch to it.`)) return;
          try { showSecret(await api("POST", `/api/webhooks/${w.id}/rotate-secret`)); await refresh(); } catch (e) { status.fail(e); }
        } }, "Rotate secret"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Delete webhook #${w.id} and its delivery log?`)) return;
          try { await api("DELETE", `/api/webhooks/${w.id}`); status.ok(`Webhook #${w.id} deleted`); log.replaceChildren(); await refresh(); } catch (e) { status.fail(e); }
        } }, "Delete"))))), "No webhook yet."));
  };
  const form = h("form", { id: "webhook-form", class: "grid small", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const events = String(f.get("events")).split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const w = await api("POST", "/api/webhooks", { url: f.get("url"), events, description: f.get("description") || "" });
      showSecret(w);
      status.ok(`Webhook #${w.id} created`); ev.target.reset(); await refresh();
    } catch (e) { status.fail(e); }
  } },
    h("label", {}, "URL", h("input", { name: "url", type: "url", required: true, maxlength: 2000, placeholder: "https://backend.example/hooks/berrylive" })),
    h("label", {}, "Events (comma separated patterns)", h("input", { name: "events", required: true, value: "broadcast.*, order.paid", title: TOPICS })),
    h("label", {}, "Description", h("input", { name: "description", maxlength: 200 })),
    h("div", {}, h("button", { type: "submit" }, "Add webhook")));
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Webhooks"), list, h("h3", {}, "New webhook"), form, secret, status),
    h("section", { class: "card" }, log));
  await refresh();
}
