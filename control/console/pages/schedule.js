// The schedule: every broadcast (anchors: their own), filtered by state, refreshed every 4 s.
import { h, badge, fmtTime, toast } from "../lib/dom.js";
import { api } from "../lib/api.js";
import { every } from "../lib/view.js";
import { userLabel, userNames } from "../lib/names.js";

const STATES = ["scheduled", "live", "interrupted", "ended", "replay_ready", "cancelled", "banned"];

export async function scheduleView(main) {
  const users = await userNames();
  const filter = h("select", { id: "state-filter", onchange: () => refresh() },
    h("option", { value: "" }, "all states"), ...STATES.map((s) => h("option", { value: s }, s)));
  const body = h("tbody", { id: "schedule-body" });
  main.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row-actions" }, h("h2", { class: "grow" }, "Schedule"), filter),
    h("table", {}, h("thead", {}, h("tr", {}, ...["Start", "Title", "Anchor", "State", "Reminders"].map((x) => h("th", {}, x)))), body)));
  const refresh = async () => {
    const q = filter.value ? `&state=${filter.value}` : "";
    const page = await api("GET", `/api/broadcasts?limit=100${q}`);
    const rows = page.items.map((b) => h("tr", { class: "row", dataset: { id: b.id }, onclick: () => { location.hash = `#/b/${b.id}`; } },
      h("td", {}, fmtTime(b.scheduled_start)),
      h("td", {}, b.cover_url ? h("img", { src: `${b.cover_url}?v=${encodeURIComponent(b.updated_at || "")}`, alt: "", class: "cover-thumb" }) : "", b.title),
      h("td", { class: "anchor" }, b.anchor_id ? userLabel(users, b.anchor_id) : "—"),
      h("td", {}, badge(b.state)), h("td", {}, b.reminder_count)));
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No broadcasts yet."))]));
  };
  every(4000, () => refresh().catch((e) => toast(e.message)));
}
