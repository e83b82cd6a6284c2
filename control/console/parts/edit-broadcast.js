// Editing a broadcast (operators): title, description, times, anchor, settings; and its
// state history (every transition, who and why). Products are edited on the Shelf tab.
import { h, badge, fmtTime, isoToLocal, localToIso, statusLine, table } from "../lib/dom.js";
import { api, isOperator, listAll } from "../lib/api.js";

const SETTINGS = ["comments", "likes", "replay", "sharing"];

export function editBroadcast(b, saved) {
  if (!isOperator() || !["scheduled", "live", "interrupted"].includes(b.state)) return "";
  const status = statusLine("edit-status");
  const anchors = h("select", { name: "anchor" }, h("option", { value: "" }, "— none —"));
  listAll("/api/users?role=anchor").then((items) => {
    anchors.append(...items.map((a) => h("option", { value: a.id }, `${a.display_name || a.username} (${a.username})`)));
    anchors.value = b.anchor_id ?? "";
  }).catch(() => {});
  const form = h("form", { id: "edit-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = {
      title: f.get("title"), description: f.get("description") || "",
      scheduled_start: localToIso(f.get("start")), scheduled_end: localToIso(f.get("end")),
      anchor_id: f.get("anchor") ? Number(f.get("anchor")) : null,
      settings: Object.fromEntries(SETTINGS.map((k) => [k, f.get(k) === "on"])),
    };
    try { const nb = await api("PATCH", `/api/broadcasts/${b.id}`, body); status.ok("Saved"); saved(nb); }
    catch (e) { status.fail(e); }
  } },
    h("div", { class: "grid small" },
      h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 200, value: b.title })),
      h("label", {}, "Start", h("input", { name: "start", type: "datetime-local", required: true, value: isoToLocal(b.scheduled_start) })),
      h("label", {}, "End", h("input", { name: "end", type: "datetime-local", value: b.scheduled_end ? isoToLocal(b.scheduled_end) : "" })),
      h("label", {}, "Anchor", anchors)),
    h("label", {}, "Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 }, b.description || "")),
    h("div", {}, ...SETTINGS.map((k) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: k, checked: b.settings?.[k] !== false }), " " + k))),
    h("div", { class: "row-actions" }, h("button", { type: "submit" }, "Save")), status);
  return h("details", { class: "card", id: "edit-broadcast" }, h("summary", {}, "Edit broadcast"), form);
}

export function historyBox(b) {
  const box = h("details", { class: "card", id: "state-history" }, h("summary", {}, "State history"));
  box.addEventListener("toggle", async () => {
    if (!box.open || box.dataset.loaded) return;
    box.dataset.loaded = "1";
    try {
      const r = await api("GET", `/api/broadcasts/${b.id}/history?limit=100`);
      box.append(table(["When", "From", "To", "Trigger", "By", "Reason"], r.items.map((t) => h("tr", {},
        h("td", {}, fmtTime(t.at)), h("td", {}, t.previous ?? "—"), h("td", {}, badge(t.state)), h("td", {}, t.trigger),
        h("td", {}, t.actor || "—"), h("td", {}, t.reason || ""))), "No transition yet."));
    } catch (e) { box.append(h("p", { class: "error" }, e.message)); }
  });
  return box;
}
