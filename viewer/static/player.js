// The live player: the lowest-latency way this browser can play, and "the anchor will be
// right back" while the publisher is away (then it starts again by itself).
//
// Order: WHEP (WebRTC, when the server answers OPTIONS /whep/APP/STREAM), LL-HLS with hls.js
// (lowLatencyMode) where Media Source Extensions exist, native HLS on Safari/iOS, WS-FLV with
// mpegts.js. `?player=whep|hls|native|flv` forces one (debugging). A way that fails to start
// (or plays no frame within START_TIMEOUT_MS) hands over to the next; when the stream itself
// is gone (its playlist answers 404) the page shows the away card and probes until it is back.

const START_TIMEOUT_MS = 12_000;
const STALL_MS = 8_000;
const PROBE_MS = 2_000;

const VENDOR = "/viewer/vendor";

// hls.js and mpegts.js are loaded only when a way needs them (their minified UMD builds:
// a WHEP viewer downloads neither).
const scripts = new Map();
function loadScript(name, global) {
  if (window[global]) return Promise.resolve(window[global]);
  if (!scripts.has(name)) {
    scripts.set(name, new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = `${VENDOR}/${name}`;
      s.onload = () => (window[global] ? resolve(window[global]) : reject(new Error(`${name}: no ${global}`)));
      s.onerror = () => {
        scripts.delete(name);
        reject(new Error(`${name} did not load`));
      };
      document.head.append(s);
    }));
  }
  return scripts.get(name);
}

export function loadHls() {
  return loadScript("hls.min.js", "Hls");
}

function loadMpegts() {
  return loadScript("mpegts.js", "mpegts");
}

function isApple() {
  return /Apple/.test(navigator.vendor || "") && !/CriOS|FxiOS|EdgiOS/.test(navigator.userAgent);
}

async function whepAvailable(url) {
  if (!url || !window.RTCPeerConnection) return false;
  try {
    const r = await fetch(url, { method: "OPTIONS", cache: "no-store" });
    return r.ok;
  } catch (e) {
    return false;
  }
}

// -- the ways to play: each returns {destroy()} or throws ------------------------------

async function playWhep(video, url) {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    if (video.srcObject !== stream) video.srcObject = stream;
  };
  let resource = null;
  const handle = {
    failed: null,
    destroy() {
      pc.close();
      video.srcObject = null;
      if (resource) fetch(resource, { method: "DELETE" }).catch(() => {});
    },
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 1500); // host candidates are enough on a LAN; the server trickles none
    });
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`WHEP answered ${r.status}`);
    const loc = r.headers.get("Location");
    if (loc) resource = new URL(loc, new URL(url, location.href)).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  } catch (e) {
    handle.destroy();
    throw e;
  }
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") handle.onfail?.("whep " + pc.connectionState);
  });
  return handle;
}

async function playHls(video, url, { live = true } = {}) {
  const Hls = await loadHls();
  if (!Hls.isSupported()) throw new Error("no MSE");
  const hls = new Hls(
    live
      ? { lowLatencyMode: true, backBufferLength: 10, liveDurationInfinity: true, manifestLoadingMaxRetry: 1 }
      : { lowLatencyMode: false },
  );
  const handle = {
    hls,
    destroy() { hls.destroy(); },
  };
  hls.on(Hls.Events.ERROR, (_e, d) => {
    if (d.fatal) handle.onfail?.(`hls ${d.type}:${d.details}`);
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
  hls.loadSource(url);
  hls.attachMedia(video);
  return handle;
}

async function playNative(video, url) {
  if (!video.canPlayType("application/vnd.apple.mpegurl")) throw new Error("no native HLS");
  video.src = url;
  const handle = {
    destroy() { video.removeAttribute("src"); video.load(); },
  };
  video.onerror = () => handle.onfail?.("native error");
  video.play().catch(() => {});
  return handle;
}

async function playFlv(video, url) {
  const mpegts = await loadMpegts();
  if (!mpegts.getFeatureList().mseLivePlayback) throw new Error("no MSE live playback");
  const player = mpegts.createPlayer(
    { type: "flv", isLive: true, url },
    { enableWorker: false, lazyLoad: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 3 },
  );
  const handle = {
    destroy() { player.destroy(); },
  };
  player.on(mpegts.Events.ERROR, (type, detail) => handle.onfail?.(`flv ${type}:${detail}`));
  player.attachMediaElement(video);
  player.load();
  player.play()?.catch?.(() => {});
  return handle;
}

// -- the player ---------------------------------------------------------------------------

export class LivePlayer {
  constructor(video, { hls, flv, whep, onState }) {
    this.video = video;
    this.urls = { hls, whep, flv: flv.replace(/^http/, "ws") };
    this.onState = onState || (() => {});
    this.handle = null;
    this.way = null;
    this.state = "idle"; // idle | starting | playing | away | stopped
    this.frames = 0;
    this.lastProgress = { t: -1, at: 0 };
    this.generation = 0;
    this._watch = null;
    this._countFrames();
  }

  _countFrames() {
    const v = this.video;
    if (!v.requestVideoFrameCallback) return;
    const tick = () => {
      this.frames += 1;
      v.requestVideoFrameCallback(tick);
    };
    v.requestVideoFrameCallback(tick);
  }

  async ways() {
    const forced = new URLSearchParams(location.search).get("player");
    if (forced) return [forced];
    const out = [];
    if (await whepAvailable(this.urls.whep)) out.push("whep");
    const mse = !!(window.MediaSource || window.ManagedMediaSource);
    const native = !!this.video.canPlayType("application/vnd.apple.mpegurl");
    if (isApple() && native) out.push("native");
    if (mse) out.push("hls");
    if (native && !out.includes("native")) out.push("native");
    if (mse) out.push("flv");
    return out;
  }

  _set(state, detail) {
    this.state = state;
    document.body.dataset.player = state;
    if (this.way) document.body.dataset.way = this.way;
    this.onState(state, detail);
  }

  async start() {
    const gen = ++this.generation;
    this._teardown();
    this._set("starting");
    const ways = await this.ways();
    for (const way of ways) {
      if (gen !== this.generation) return;
      if (!(await this.streamUp())) break;
      try {
        this.way = way;
        const handle = await this._open(way);
        if (gen !== this.generation) { handle.destroy(); return; }
        this.handle = handle;
        const ok = await this._firstFrame(handle, gen);
        if (ok) {
          this._set("playing", way);
          handle.onfail = (why) => this._lost(gen, why);
          this._watchdog(gen);
          return;
        }
        console.warn(`player: ${way} gave no frame`);
      } catch (e) {
        console.warn(`player: ${way} failed`, e);
      }
      this._teardown();
    }
    if (gen === this.generation) this.away();
  }

  _open(way) {
    const v = this.video;
    if (way === "whep") return playWhep(v, this.urls.whep);
    if (way === "hls") return playHls(v, this.urls.hls);
    if (way === "native") return playNative(v, this.urls.hls);
    if (way === "flv") return playFlv(v, this.urls.flv);
    throw new Error(`unknown way ${way}`);
  }

  _firstFrame(handle, gen) {
    return new Promise((resolve) => {
      const start = this.frames;
      const t0 = this.video.currentTime;
      let failed = false;
      handle.onfail = () => { failed = true; };
      const deadline = Date.now() + START_TIMEOUT_MS;
      const check = () => {
        if (gen !== this.generation || failed) return resolve(false);
        const moved = this.frames > start + 2 || this.video.currentTime > t0 + 0.3;
        if (moved) return resolve(true);
        if (Date.now() > deadline) return resolve(false);
        setTimeout(check, 100);
      };
      check();
    });
  }

  // Progress is new frames (requestVideoFrameCallback) or, without them (audio only, older
  // browsers), the playhead; a WebRTC playhead runs on with a frozen picture, so there only
  // frames count. Hidden tabs and a paused video are not stalls.
  _watchdog(gen) {
    clearInterval(this._watch);
    const rvfc = !!this.video.requestVideoFrameCallback;
    const sample = () => ({ t: this.video.currentTime, f: this.frames, at: Date.now() });
    this.lastProgress = sample();
    this._watch = setInterval(() => {
      if (gen !== this.generation) return clearInterval(this._watch);
      const now = sample();
      const last = this.lastProgress;
      const framed = rvfc && now.f !== last.f;
      const moved = now.t !== last.t && (this.way !== "whep" || !rvfc);
      if (framed || moved || this.video.paused || document.hidden) {
        this.lastProgress = now;
      } else if (now.at - last.at > STALL_MS) {
        this._lost(gen, "stalled");
      }
    }, 1000);
  }

  // Playback broke (an error, or no progress for STALL_MS): the away card at once, and a new
  // start as soon as the stream answers again (during the relay's publisher_linger the
  // stream still answers without media: the start then finds no frame and comes back here).
  _lost(gen, why) {
    if (gen !== this.generation) return;
    console.warn("player: lost", why);
    this.away();
  }

  // The room says the publisher left (live_end): no need to wait for the stall.
  gone() {
    if (this.state === "playing" || this.state === "starting") this.away();
  }

  _teardown() {
    clearInterval(this._watch);
    if (this.handle) {
      try { this.handle.destroy(); } catch (e) { /* already gone */ }
      this.handle = null;
    }
  }

  // Whether the stream is up: its LL-HLS playlist answers (the hub packages every live stream).
  async streamUp() {
    try {
      const r = await fetch(this.urls.hls, { cache: "no-store" });
      return r.ok;
    } catch (e) {
      return false;
    }
  }

  // The publisher is away: show it, probe, and start again once the stream is back.
  async away() {
    const gen = ++this.generation;
    this._teardown();
    this._set("away");
    while (gen === this.generation) {
      await new Promise((r) => setTimeout(r, PROBE_MS));
      if (gen !== this.generation) return;
      if (await this.streamUp()) {
        if (gen === this.generation) this.start();
        return;
      }
    }
  }

  // A hint from the room (live_start): try at once instead of at the next probe.
  wake() {
    if (this.state === "away") this.start();
  }

  stop() {
    this.generation += 1;
    this._teardown();
    this._set("stopped");
  }
}

export async function playVod(video, url) {
  const Hls = await loadHls();
  if (Hls.isSupported()) return playHls(video, url, { live: false });
  return playNative(video, url);
}
