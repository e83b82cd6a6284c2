// Accounts (operators: create, change role or name, disable, reset the password) and the
// signed-in user's API tokens (create: shown once; revoke).
import { h, badge, fmtTime, statusLine, table } from "../lib/dom.js";
import { api, isOperator, listAll, me } from "../lib/api.js";

const ROLES = ["operator", "anchor", "moderator"];

export async function accountsView(main) {
  const status = statusLine("accounts-status");
  const users = h("div", { id: "users" });
  const tokens = h("div", { id: "tokens" });
  const secret = h("div", { id: "token-secret" });
  const refreshUsers = async () => {
    if (!isOperator()) return;
    const items = await listAll("/api/users");
    users.replaceChildren(table(["Id", "User", "Name", "Role", "State", "Created", ""], items.map((u) => {
      const role = h("select", { value: u.role }, ...ROLES.map((r) => h("option", { value: r }, r)));
      const name = h("input", { value: u.display_name, maxlength: 64, class: "narrow-input" });
      return h("tr", { dataset: { user: u.id } }, h("td", {}, u.id), h("td", { class: "mono" }, u.username), h("td", {}, name), h("td", {}, role),
        h("td", {}, u.disabled ? badge("disabled") : badge("active")), h("td", {}, fmtTime(u.created_at)),
        h("td", {}, h("div", { class: "row-actions" },
          h("button", { type: "button", class: "secondary", onclick: async () => {
            try { await api("PATCH", `/api/users/${u.id}`, { role: role.value, display_name: name.value }); status.ok(`${u.username} saved`); await refreshUsers(); } catch (e) { status.fail(e); }
          } }, "Save"),
          h("button", { type: "button", class: "secondary", onclick: async () => {
            const pw = prompt(`New password for ${u.username} (their tokens are revoked)`);
            if (!pw) return;
            try { await api("PATCH", `/api/users/${u.id}`, { password: pw }); status.ok(`${u.username}: password changed`); } catch (e) { status.fail(e); }
          } }, "Password"),
          u.id !== me().id ? h("button", { type: "button", class: u.disabled ? "secondary" : "danger", onclick: async () => {
            try { await api("PATCH", `/api/users/${u.id}`, { disabled: !u.disabled }); status.ok(`${u.username} ${u.disabled ? "enabled" : "disabled"}`); await refreshUsers(); } catch (e) { status.fail(e); }
          } }, u.disabled ? "Enable" : "Disable") : null)));
    }), "No accounts."));
  };
  const refreshTokens = async () => {
    const r = await api("GET", "/api/tokens");
    tokens.replaceChildren(table(["Id", "Name", "Kind", "Created", "Expires", "Last used", ""], (r.items || []).map((t) => h("tr", { dataset: { token: t.id } },
      h("td", {}, t.id), h("td", {}, t.name), h("td", {}, t.kind), h("td", {}, fmtTime(t.created_at)), h("td", {}, fmtTime(t.expires_at)),
      h("td", {}, fmtTime(t.last_used_at)),
      h("td", {}, t.revoked_at ? badge("revoked") : h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Revoke token “${t.name}”?`)) return;
        try { await api("DELETE", `/api/tokens/${t.id}`); status.ok(`Token ${t.name} revoked`); await refreshTokens(); } catch (e) { status.fail(e); }
      } }, "Revoke")))), "No API token."));
  };
  const newUser = h("form", { id: "user-form", class: "grid small", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      const u = await api("POST", "/api/users", { username: f.get("username"), password: f.get("password"), role: f.get("role"), display_name: f.get("display_name") || f.get("username") });
      status.ok(`Account ${u.username} created`); ev.target.reset(); await refreshUsers();
    } catch (e) { status.fail(e); }
  } },
    h("label", {}, "User name", h("input", { name: "username", required: true, maxlength: 64 })),
    h("label", {}, "Display name", h("input", { name: "display_name", maxlength: 64 })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
    h("label", {}, "Role", h("select", { name: "role" }, ...ROLES.map((r) => h("option", { value: r }, r)))),
    h("div", {}, h("button", { type: "submit" }, "Create account")));
  const newToken = h("form", { id: "token-form", class: "row-actions", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { name: f.get("name") };
    if (Number(f.get("days")) > 0) body.expires_in = Number(f.get("days")) * 86400;
    try {
      const t = await api("POST", "/api/tokens", body);
      secret.replaceChildren(h("p", { class: "ok" }, `Token “${t.name}”: copy it now, it is not shown again.`), h("input", { readonly: true, value: t.token, class: "mono", id: "new-token" }));
      ev.target.reset(); await refreshTokens();
    } catch (e) { status.fail(e); }
  } },
    h("input", { name: "name", required: true, maxlength: 64, placeholder: "name, e.g. mini-program backend" }),
    h("input", { name: "days", type: "number", min: 0, placeholder: "expires in days (0: never)", class: "narrow-input" }),
    h("button", { type: "submit" }, "Create API token"));
  main.replaceChildren(
    isOperator() ? h("section", { class: "card" }, h("h2", {}, "Accounts"), users, h("h3", {}, "New account"), newUser) : "",
    h("section", { class: "card" }, h("h2", {}, "My API tokens"), tokens, newToken, secret), status);
  await Promise.all([refreshUsers(), refreshTokens()]);
}
