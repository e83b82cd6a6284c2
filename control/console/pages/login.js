// Sign in: a session token kept in sessionStorage (gone with the tab).
import { h, $ } from "../lib/dom.js";
import { api, saveSession } from "../lib/api.js";

export function loginView(main, done) {
  const onLogin = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      const r = await api("POST", "/api/auth/login", { username: f.get("username"), password: f.get("password") });
      saveSession(r.token, r.user);
      done();
    } catch (e) { $("#login-error").textContent = e.message; }
  };
  main.replaceChildren(h("section", { id: "login-view", class: "card narrow" },
    h("h2", {}, "Sign in"),
    h("form", { id: "login-form", onsubmit: onLogin },
      h("label", {}, "User name", h("input", { name: "username", autocomplete: "username", required: true, maxlength: 64 })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 1024 })),
      h("button", { type: "submit" }, "Sign in"),
      h("p", { class: "error", id: "login-error", role: "alert" }))));
}
