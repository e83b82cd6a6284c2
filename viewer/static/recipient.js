// The recipient of an order, asked once: the buyer's address book (GET/POST /api/me/addresses,
// contracts.md) when the server has one, else kept in this browser (per user); the form
// that asks for it (name, phone, address), and the saved address shown instead of the form.

import { api, ApiError, el } from "./api.js";
import { openSheet } from "./sheet.js";

const LOCAL_RECIPIENT = "berrylive:recipient";

export class Recipients {
  constructor({ viewer }) {
    this.viewer = viewer;
    this.addressBook = null; // null: unknown yet; false: the server has none (404)
  }

  async book() {
    if (this.addressBook !== null) return this.addressBook;
    try {
      const r = await api("GET", "/api/me/addresses", { token: this.viewer.token });
      this.addressBook = Array.isArray(r) ? r : r.items || [];
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405)) this.addressBook = false;
      else this.addressBook = [];
    }
    return this.addressBook;
  }

  local() {
    try {
      const r = JSON.parse(localStorage.getItem(`${LOCAL_RECIPIENT}:${this.viewer.user?.uid}`) || "null");
      return r && r.name && r.phone && r.address ? r : null;
    } catch (e) {
      return null;
    }
  }

  // The saved address when there is one (shown, with "change"), else the form.
  async form(box) {
    const book = await this.book();
    const saved = book ? book.find((a) => a.default) || book[0] : null;
    const local = book === false ? this.local() : null;
    const name = el("input", { id: "rc-name", autocomplete: "name", maxlength: "32" });
    const phone = el("input", { id: "rc-phone", type: "tel", autocomplete: "tel", maxlength: "20" });
    const address = el("textarea", { id: "rc-address", rows: "2", autocomplete: "street-address", maxlength: "200" });
    const form = el("div", { id: "recipient-form" },
      el("h3", {}, "收货信息 · Recipient"),
      el("label", {}, "姓名 · Name", name),
      el("label", {}, "手机 · Phone", phone),
      el("label", {}, "地址 · Address", address));
    let useSaved = !!(saved || local);
    const show = () => {
      box.replaceChildren();
      if (useSaved) {
        const a = saved || local;
        box.append(el("div", { class: "addr", id: "recipient-saved" },
          el("div", {}, `${a.name} ${a.phone}`), el("div", { class: "small" }, a.address),
          el("button", { type: "button", class: "small", onclick: () => { useSaved = false; show(); } }, "更换 · change")));
      } else {
        box.append(form);
      }
    };
    show();
    return {
      read: () => {
        if (useSaved && saved) return { address_id: saved.id, name: saved.name, phone: saved.phone, address: saved.address, saved: true };
        if (useSaved && local) return { ...local, saved: true };
        const r = { name: name.value.trim(), phone: phone.value.trim(), address: address.value.trim() };
        if (!r.name || !/^[+0-9][0-9 -]{4,19}$/.test(r.phone) || r.address.length < 4) return null;
        return r;
      },
    };
  }

  // The recipient for an order placed without one (paying it from "my orders").
  ask() {
    return new Promise((resolve) => {
      const box = el("div");
      const error = el("p", { class: "error" });
      const ok = el("button", { class: "primary", id: "recipient-confirm", type: "button" }, "确认 · Confirm");
      openSheet(box, error, ok);
      const close = document.getElementById("sheet-close");
      const cancel = () => { close.removeEventListener("click", cancel); resolve(null); };
      close.addEventListener("click", cancel);
      this.form(box).then((form) => {
        ok.addEventListener("click", () => {
          const who = form.read();
          if (!who) return (error.textContent = "请填写收货信息 · name, phone and address please");
          close.removeEventListener("click", cancel);
          resolve(who);
        });
      });
    });
  }

  async save(who) {
    if (who.saved) return;
    const uid = this.viewer.user?.uid;
    if (this.addressBook === false) {
      try { localStorage.setItem(`${LOCAL_RECIPIENT}:${uid}`, JSON.stringify(who)); } catch (e) { /* private mode */ }
      return;
    }
    try {
      const a = await api("POST", "/api/me/addresses", {
        token: this.viewer.token,
        body: { name: who.name, phone: who.phone, address: who.address, default: true },
      });
      this.addressBook = [a, ...(this.addressBook || [])];
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        this.addressBook = false;
        return this.save(who);
      }
      console.warn("address book", e);
    }
  }
}
