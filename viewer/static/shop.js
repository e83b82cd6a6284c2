// The shop in the room: the "now explaining" card (price, buy button), flash sales with their
// countdown and remaining stock, and buying: the recipient (asked once; the address book of
// /api/me/addresses when the server has it, else kept in this browser), the order through the
// shop API, the payment through the configured provider (the simulator in the demo) and the
// order's state (docs/shop.md, docs/viewer.md).

import { api, deviceId, el, sleep, toast, yuan } from "./api.js";
import { afterSalesPart, latestByOrder } from "./aftersales.js";
import { Recipients } from "./recipient.js";
import { closeSheet, openSheet } from "./sheet.js";

const SALE_POLL_MS = 6_000;
const ORDER_POLL_MS = 1_000;
const ORDER_POLL_FOR_MS = 120_000;

const STATE_TEXT = {
  pending_payment: "待支付 · awaiting payment",
  paid: "已支付 · paid",
  shipped: "已发货 · shipped",
  completed: "已完成 · completed",
  cancelled: "已取消 · cancelled",
  refunding: "退款中 · refunding",
  refunded: "已退款 · refunded",
};

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function countdown(endsAt) {
  const ms = Date.parse(endsAt) - Date.now();
  if (!(ms > 0)) return "已结束 · over";
  const s = Math.floor(ms / 1000);
  const mm = String(Math.floor(s / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return `${mm}:${ss}`;
}

export class Shop {
  constructor({ broadcastId, viewer, share = null }) {
    this.bid = broadcastId;
    this.viewer = viewer;
    this.share = share;
    this.products = new Map();
    this.card = null;
    this.sale = null;
    this.recipients = new Recipients({ viewer });
    this.recipientField = true; // the order routes accept `recipient` (contracts.md)
    this._saleTimer = null;
    this._tick = null;
    document.getElementById("card-buy").addEventListener("click", () => this.buyFromCard());
    document.getElementById("bag").addEventListener("click", () => this.openBag());
    document.getElementById("sheet-close").addEventListener("click", closeSheet);
    document.getElementById("sheet").addEventListener("click", (e) => {
      if (e.target.id === "sheet") closeSheet();
    });
  }

  async product(id) {
    if (!this.products.has(id)) this.products.set(id, api("GET", `/api/products/${id}`));
    try {
      return await this.products.get(id);
    } catch (e) {
      this.products.delete(id);
      throw e;
    }
  }

  async load() {
    if (!this.bid) return;
    try {
      const c = await api("GET", `/api/broadcasts/${this.bid}/card`);
      if (c.card) await this.showCard(c.card);
    } catch (e) {
      console.warn("card", e);
    }
  }

  // -- notices from the room --------------------------------------------------------------

  async notice(n) {
    const d = n.data || {};
    if (n.type === "card.pushed") await this.showCard(d);
    else if (n.type === "card.cleared" && d.reason !== "replaced") {
      if (!this.card || this.card.card_id === (d.card_id ?? d.id)) this.hideCard();
    } else if (n.type && n.type.startsWith("flash_sale.")) {
      if (this.sale && d.id === this.sale.id) await this.refreshSale();
    }
  }

  async showCard(c) {
    const card = { card_id: c.card_id ?? c.id, product_id: c.product_id, sku_id: c.sku_id, flash_sale_id: c.flash_sale_id };
    this.card = card;
    let product;
    try {
      product = await this.product(card.product_id);
    } catch (e) {
      return;
    }
    if (this.card !== card) return;
    const sku = (product.skus || []).find((s) => s.id === card.sku_id) || (product.skus || [])[0];
    document.getElementById("card-title").textContent = product.title;
    const img = document.getElementById("card-image");
    img.src = (product.images || [])[0] || "";
    img.hidden = !img.src || img.getAttribute("src") === "";
    document.getElementById("card-price").textContent = sku ? yuan(sku.price_fen) : "";
    document.getElementById("card-list-price").textContent = "";
    const box = document.getElementById("card");
    box.dataset.productId = String(card.product_id);
    box.hidden = false;
    this.sale = null;
    document.getElementById("card-flash").hidden = true;
    if (card.flash_sale_id) {
      this.sale = { id: card.flash_sale_id };
      await this.refreshSale();
    }
    this.drawSale();
  }

  hideCard() {
    this.card = null;
    this.sale = null;
    clearInterval(this._tick);
    clearTimeout(this._saleTimer);
    document.getElementById("card").hidden = true;
  }

  async refreshSale() {
    clearTimeout(this._saleTimer);
    if (!this.sale) return;
    const id = this.sale.id;
    try {
      const s = await api("GET", `/api/flash-sales/${id}`);
      if (!this.sale || this.sale.id !== id) return;
      this.sale = s;
    } catch (e) {
      console.warn("flash sale", e);
    }
    this.drawSale();
    if (this.sale && ["open", "scheduled"].includes(this.sale.status)) {
      this._saleTimer = setTimeout(() => this.refreshSale(), SALE_POLL_MS * (0.75 + Math.random() / 2));
    }
  }

  drawSale() {
    clearInterval(this._tick);
    const s = this.sale;
    const flash = document.getElementById("card-flash");
    const buy = document.getElementById("card-buy");
    buy.disabled = false;
    buy.textContent = "立即购买 · Buy";
    if (!s || !s.status) {
      flash.hidden = true;
      return;
    }
    flash.hidden = false;
    const live = s.status === "open" || s.status === "scheduled";
    const price = document.getElementById("card-price");
    const list = document.getElementById("card-list-price");
    if (live) price.textContent = yuan(s.sale_price_fen);
    list.textContent = "";
    this.product(s.product_id).then((p) => {
      const sku = (p.skus || []).find((k) => k.id === s.sku_id);
      if (!sku || this.sale !== s) return;
      if (live) list.textContent = yuan(sku.price_fen);
      else price.textContent = yuan(sku.price_fen);
    }).catch(() => {});
    document.getElementById("card-remaining").textContent = String(s.remaining ?? "?");
    const cd = document.getElementById("card-countdown");
    let asked = false; // past the start or the end: ask the server once what the sale is now
    const draw = () => {
      if (s.status === "scheduled") cd.textContent = `${countdown(s.starts_at)} 后开抢 · starts`;
      else if (s.status === "open") cd.textContent = `秒杀 ${countdown(s.ends_at)}`;
      else cd.textContent = { sold_out: "已抢光 · sold out", closed: "已结束 · closed", ended: "已结束 · over" }[s.status] || s.status;
      const edge = s.status === "open" ? s.ends_at : s.status === "scheduled" ? s.starts_at : null;
      if (!asked && edge && Date.parse(edge) <= Date.now()) {
        asked = true;
        this.refreshSale();
      }
    };
    draw();
    this._tick = setInterval(draw, 1000);
    if (s.status === "open") buy.textContent = "马上抢 · Grab it";
    else if (s.status === "scheduled") buy.textContent = "原价购买 · Buy at list price (sale soon)";
    else buy.textContent = "原价购买 · Buy at list price";
  }

  // -- the bag: the broadcast's shelf and the viewer's orders ------------------------------

  async openBag() {
    const shelf = el("ol", { id: "shelf-list", class: "shelf" }, el("li", { class: "small" }, "…"));
    const orders = el("ol", { id: "my-orders", class: "orders" });
    openSheet(el("h3", {}, "商品 · Products"), shelf, el("h3", {}, "我的订单 · My orders"), orders);
    const items = [];
    if (this.bid) {
      try {
        const r = await api("GET", `/api/broadcasts/${this.bid}/shelf`);
        for (const it of r.items || []) {
          if (it.on_shelf === false || !it.product) continue;
          this.products.set(it.product.id, Promise.resolve(it.product));
          items.push(it.product);
        }
      } catch (e) {
        console.warn("shelf", e);
      }
    }
    shelf.replaceChildren(...items.map((p, i) => {
      const prices = (p.skus || []).map((s) => s.price_fen);
      const from = prices.length ? Math.min(...prices) : null;
      const inStock = (p.skus || []).some((s) => s.stock > 0);
      return el("li", { "data-product-id": p.id },
        (p.images || [])[0] ? el("img", { src: p.images[0], alt: "" }) : el("span", { class: "noimg" }, "🛍"),
        el("span", { class: "t" }, `${i + 1}. ${p.title}`, el("br"), el("span", { class: "price" }, from === null ? "" : yuan(from))),
        el("button", { type: "button", disabled: !inStock, onclick: () => this.buyProduct(p.id) }, inStock ? "购买 · Buy" : "无货 · Sold out"));
    }));
    if (!items.length) shelf.append(el("li", { class: "small" }, "暂无商品 · nothing on the shelf"));
    if (!this.viewer.token) {
      orders.append(el("li", { class: "small" }, "登录后查看 · sign in to see your orders"));
      return;
    }
    try {
      const token = this.viewer.token;
      const [r, requests] = await Promise.all([
        api("GET", "/api/orders?limit=20", { token }),
        // after-sales requests: a server without them yet shows the orders alone
        latestByOrder(token).catch(() => new Map()),
      ]);
      const reopen = () => this.openBag();
      for (const o of r.items || []) {
        const title = el("span", {}, `#${o.product_id}`);
        this.product(o.product_id).then((p) => { title.textContent = p.title; }).catch(() => {});
        const refunded = o.refunded_fen && o.state !== "refunded" ? ` · 已退 · refunded ${yuan(o.refunded_fen)}` : "";
        orders.append(el("li", { "data-order-id": o.id, "data-state": o.state },
          el("span", { class: "t" }, title, el("br"),
            el("span", { class: "small order-line" }, `${yuan(o.amount_fen)} · ${STATE_TEXT[o.state] || o.state}${refunded}`),
            el("br"), afterSalesPart(o, requests.get(o.id), { token, reopen })),
          o.state === "pending_payment"
            ? el("button", { type: "button", onclick: () => this.pay(o, null).catch((e) => toast(this.explain(e))) }, "去支付 · Pay")
            : ""));
      }
      if (!orders.children.length) orders.append(el("li", { class: "small" }, "暂无订单 · no orders yet"));
    } catch (e) {
      orders.append(el("li", { class: "error" }, this.explain(e)));
    }
  }

  // -- buying -----------------------------------------------------------------------------

  needToken() {
    if (this.viewer.token) return false;
    toast("登录后可购买 · Sign in to buy", 3000);
    return true;
  }

  async buyFromCard() {
    if (this.needToken() || !this.card) return;
    const sale = this.sale && this.sale.status === "open" ? this.sale : null;
    await this.buySheet(this.card.product_id, { sale, skuId: this.card.sku_id });
  }

  async buyProduct(productId) {
    if (this.needToken()) return;
    await this.buySheet(productId, {});
  }

  async buySheet(productId, { sale, skuId }) {
    let product;
    try {
      product = await this.product(productId);
    } catch (e) {
      return toast(e.message);
    }
    const skus = product.skus || [];
    let chosen = sale ? skus.find((s) => s.id === sale.sku_id) : skus.find((s) => s.id === skuId && s.stock > 0) || skus.find((s) => s.stock > 0);
    const price = el("span", { class: "price" });
    const chips = el("div", { class: "chips" });
    const drawPrice = () => {
      price.textContent = sale ? yuan(sale.sale_price_fen) : chosen ? yuan(chosen.price_fen) : "";
      for (const b of chips.children) b.setAttribute("aria-pressed", String(Number(b.dataset.sku) === chosen?.id));
    };
    if (!sale) {
      for (const s of skus) {
        const label = Object.values(s.specs || {}).join(" / ") || s.code;
        chips.append(el("button", {
          type: "button", "data-sku": s.id, disabled: s.stock <= 0,
          onclick: () => { chosen = s; drawPrice(); },
        }, `${label}${s.stock <= 0 ? " (无货)" : ""}`));
      }
    }
    const recipientBox = el("div", { id: "recipient-box" });
    const error = el("p", { class: "error", id: "buy-error" });
    const confirm = el("button", { class: "primary", id: "buy-confirm", type: "button" }, sale ? "马上抢 · Grab it" : "提交订单 · Place order");
    openSheet(
      el("h3", {}, product.title),
      el("div", { class: "row" }, price, sale ? el("span", { class: "flash" }, `⚡ 剩余 ${sale.remaining ?? "?"}`) : ""),
      chips,
      recipientBox,
      error,
      confirm,
    );
    drawPrice();
    const recipient = await this.recipients.form(recipientBox);
    confirm.addEventListener("click", async () => {
      error.textContent = "";
      if (!sale && !chosen) return (error.textContent = "请选择规格 · choose an option");
      const who = recipient.read();
      if (!who) return (error.textContent = "请填写收货信息 · name, phone and address please");
      confirm.disabled = true;
      try {
        const order = await this.placeOrder({ sale, sku: chosen, who });
        if (sale) this.refreshSale();
        await this.recipients.save(who);
        await this.pay(order, who);
      } catch (e) {
        error.textContent = this.explain(e);
        confirm.disabled = false;
      }
    });
  }

  explain(e) {
    const codes = {
      sold_out: "已抢光 · sold out",
      limit_reached: "已达限购 · you reached the limit",
      sale_closed: "秒杀已结束 · the sale is closed",
      sale_over: "秒杀已结束 · the sale is over",
      insufficient_stock: "库存不足 · out of stock",
      unpaid_limit: "请先支付或取消未付订单 · pay or cancel your unpaid orders first",
      busy: "人太多了，请重试 · busy, try again",
      rate_limited: "操作太频繁，请稍后再试 · too many tries, wait a moment",
      blocked: "暂时无法购买 · buying is not possible for this account",
      account_too_new: "新账号暂不能参与秒杀 · new accounts cannot join flash sales yet",
      address_book_full: "地址簿已满 · the address book is full",
      recipient_locked: "订单已发货，无法修改地址 · already shipped",
      order_pending: "请重试 · try again",
    };
    return codes[e.code] || e.message || String(e);
  }

  recipientBody(who) {
    if (!this.recipientField) return {};
    if (who.address_id) return { address_id: who.address_id };
    return { recipient: { name: who.name, phone: who.phone, address: who.address } };
  }

  // The order (a flash-sale buy or a normal order) with the recipient; a server without the
  // recipient fields yet (400 unknown_field) gets the order without them.
  // What every buy carries besides its body: the device (abuse limits) and the share link
  // the viewer came through (the sharer is credited).
  buyHeaders() {
    const h = { "X-Device-Id": deviceId() };
    if (this.share) h["X-Share-Token"] = this.share;
    return h;
  }

  // Arrived through a share link: a visit for the sharer, with or without a viewer token
  // (the shop counts it once per browser, by X-Device-Id, and once per viewer); with a
  // token it is also the touch that credits this viewer's orders. Once per page; the
  // link rides on every buy too, so a viewer who gets a token later is still credited.
  async shareVisit() {
    if (!this.share || !this.bid) return;
    try {
      await api("POST", `/api/broadcasts/${this.bid}/share-visits`, { token: this.viewer.token, headers: { "X-Device-Id": deviceId() }, body: { share: this.share } });
    } catch (e) {
      console.warn("share visit", e.code || e.message); // a bad or old link credits nobody
    }
  }

  // Share the show: a registered sharer (分享员) shares their own link (the shop credits
  // them with what it sells); anyone else shares the page itself.
  async shareLink() {
    let url = location.origin + location.pathname;
    if (this.bid && this.viewer.token) {
      try {
        const link = await api("POST", `/api/broadcasts/${this.bid}/share-links`, { token: this.viewer.token, body: {} });
        url = link.url || url;
      } catch (e) {
        if (e.code !== "not_a_sharer" && e.status !== 404) console.warn("share link", e);
      }
    }
    document.getElementById("share").dataset.url = url;
    const title = document.title;
    if (navigator.share) {
      try {
        await navigator.share({ title, url });
        return url;
      } catch (e) {
        if (e.name === "AbortError") return url;
      }
    }
    try {
      await navigator.clipboard.writeText(url);
      toast("链接已复制 · Link copied");
    } catch (e) {
      toast(url, 6000);
    }
    return url;
  }

  async placeOrder({ sale, sku, who }) {
    const key = newKey();
    const headers = this.buyHeaders();
    const send = (extra) => sale
      ? api("POST", `/api/flash-sales/${sale.id}/buy`, { token: this.viewer.token, headers, body: { idempotency_key: key, channel: "live", ...extra } })
      : api("POST", "/api/orders", {
        token: this.viewer.token,
        headers,
        body: { sku_id: sku.id, quantity: 1, broadcast_id: this.bid, idempotency_key: key, channel: "live", ...extra },
      });
    try {
      return await send(this.recipientBody(who));
    } catch (e) {
      if (e.status === 400 && e.code === "unknown_field" && this.recipientField) {
        this.recipientField = false;
        return await send({});
      }
      throw e;
    }
  }

  async putRecipient(order, who) {
    await api("PUT", `/api/orders/${order.id}/recipient`, {
      token: this.viewer.token,
      body: who.address_id ? { address_id: who.address_id } : { recipient: { name: who.name, phone: who.phone, address: who.address } },
    });
  }

  async pay(order, who) {
    if (order.state !== "pending_payment") return this.orderSheet(order);
    let pay;
    try {
      pay = await api("POST", `/api/orders/${order.id}/pay`, { token: this.viewer.token });
    } catch (e) {
      if (e.code !== "recipient_required") throw e;
      who = who || (await this.recipients.ask());
      if (!who) throw e;
      await this.putRecipient(order, who);
      await this.recipients.save(who);
      pay = await api("POST", `/api/orders/${order.id}/pay`, { token: this.viewer.token });
    }
    const payment = pay.payment || {};
    const state = el("p", { id: "order-state", "data-state": order.state }, STATE_TEXT[order.state]);
    const payBtn = el("button", { class: "primary", id: "pay-confirm", type: "button" }, `确认支付 ${yuan(pay.amount_fen)} · Pay`);
    const note = el("p", { class: "small" });
    openSheet(
      el("h3", {}, "支付 · Payment"),
      el("p", { class: "small" }, `订单 · order ${order.id}`),
      state,
      payBtn,
      note,
    );
    if (payment.sim_pay_url) {
      note.textContent = "演示支付（模拟器）· Demo payment through the simulated provider";
      payBtn.addEventListener("click", async () => {
        payBtn.disabled = true;
        try {
          // The simulator is another origin: its answer cannot be read, the order's state can.
          await fetch(payment.sim_pay_url, { method: "POST", mode: "no-cors" });
        } catch (e) {
          note.textContent = "支付服务不可达 · the payment service is unreachable";
          payBtn.disabled = false;
          return;
        }
        await this.follow(order, state);
      });
    } else if (payment.h5_url || payment.mweb_url) {
      payBtn.addEventListener("click", () => { location.href = payment.h5_url || payment.mweb_url; });
      this.follow(order, state);
    } else {
      // A mini-program pays with the prepay parameters itself (wx.requestPayment).
      note.textContent = "请在小程序中完成支付 · finish the payment in the app";
      payBtn.hidden = true;
      if (window.wx?.miniProgram) window.wx.miniProgram.postMessage({ data: { pay: payment, order: order.id } });
      this.follow(order, state);
    }
  }

  async follow(order, stateNode) {
    const until = Date.now() + ORDER_POLL_FOR_MS;
    while (Date.now() < until) {
      let o;
      try {
        o = await api("GET", `/api/orders/${order.id}`, { token: this.viewer.token });
      } catch (e) {
        await sleep(ORDER_POLL_MS);
        continue;
      }
      const s = o.state || o.order?.state;
      stateNode.textContent = STATE_TEXT[s] || s;
      stateNode.dataset.state = s;
      if (s !== "pending_payment") {
        if (s === "paid") {
          stateNode.className = "ok";
          document.getElementById("pay-confirm")?.setAttribute("hidden", "");
          toast("支付成功 · Paid");
        }
        return o;
      }
      await sleep(ORDER_POLL_MS);
    }
    return null;
  }

  // -- a prize won in a lottery: the winner gives the address it ships to ----------------

  // The viewer's prize orders without a recipient (the shop creates them from the draw, a
  // moment after it): asked for an address in `box`, or in a sheet of its own. Only when the
  // server keeps recipients (the order JSON has `recipient`).
  async claimPrizes(box = null) {
    if (this.claiming || !this.viewer.token) return;
    this.claiming = true;
    try {
      for (let i = 0; i < 15; i++) {
        let list;
        try {
          list = await api("GET", "/api/orders?state=paid&limit=50", { token: this.viewer.token });
        } catch (e) {
          list = { items: [] };
        }
        const prize = (list.items || []).find((o) => o.kind === "prize" && "recipient" in o && !o.recipient);
        if (prize) return await this.claimForm(prize, box);
        await sleep(1_000);
      }
    } finally {
      this.claiming = false;
    }
  }

  async claimForm(order, box) {
    let title = `#${order.product_id}`;
    try { title = (await this.product(order.product_id)).title; } catch (e) { /* keep the id */ }
    const recipientBox = el("div");
    const error = el("p", { class: "error" });
    const done = el("p", { id: "prize-state", class: "small" });
    const confirm = el("button", { class: "primary", id: "prize-claim", type: "button" }, "确认收货地址 · Ship my prize here");
    const part = el("div", { id: "prize-box", "data-order-id": order.id },
      el("h3", {}, `🎁 领奖 · Your prize: ${title}`), recipientBox, error, confirm, done);
    if (box) box.replaceChildren(part);
    else openSheet(part);
    const recipient = await this.recipients.form(recipientBox);
    confirm.addEventListener("click", async () => {
      error.textContent = "";
      const who = recipient.read();
      if (!who) return (error.textContent = "请填写收货信息 · name, phone and address please");
      confirm.disabled = true;
      try {
        await this.putRecipient(order, who);
        await this.recipients.save(who);
        confirm.hidden = true;
        done.className = "ok";
        done.dataset.state = "claimed";
        done.textContent = "已登记，等待发货 · we will ship it";
      } catch (e) {
        confirm.disabled = false;
        error.textContent = this.explain(e);
      }
    });
  }

  orderSheet(order) {
    openSheet(
      el("h3", {}, "订单 · Order"),
      el("p", { class: "small" }, `订单 · order ${order.id}`),
      el("p", { id: "order-state", "data-state": order.state, class: order.state === "paid" ? "ok" : "" }, STATE_TEXT[order.state] || order.state),
    );
  }
}
