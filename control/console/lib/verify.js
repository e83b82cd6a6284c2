// Checks a drawn lottery in the browser, the way danmaku/draw.py's verify does (docs/danmaku.md,
// "Audit protocol"): the seed matches the commitment, the entrants match their hash, and the
// winners recomputed from the seed are the winners announced.

const enc = new TextEncoder();
const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

// WebCrypto exists only in secure contexts (https, localhost); a console opened over plain
// http on another host hashes with @noble/hashes from node_modules instead.
let noble = null;
async function digestHex(alg, text) {
  if (globalThis.crypto?.subtle) return hex(await crypto.subtle.digest(alg, enc.encode(text)));
  if (!noble) {
    const [{ sha256 }, { sha1 }] = await Promise.all([
      import("/console/node_modules/@noble/hashes/sha2.js"),
      import("/console/node_modules/@noble/hashes/legacy.js"),
    ]);
    noble = { "SHA-256": sha256, "SHA-1": sha1 };
  }
  return hex(noble[alg](enc.encode(text)));
}
const sha256 = (t) => digestHex("SHA-256", t);

/** {ok, problems[], winners[]} for GET /api/danmaku/lotteries/{id}?entrants=1 of a drawn lottery. */
export async function verifyLottery(lot) {
  const problems = [];
  if (!lot.seed) return { ok: false, problems: ["not drawn yet: no seed revealed"], winners: [] };
  if (await sha256(lot.seed) !== lot.commitment) problems.push("the seed does not match the commitment");
  const total = (lot.prizes || []).reduce((n, p) => n + Number(p.stock), 0);
  let winners = [];
  if (lot.mode === "instant") {
    const p = Number(lot.probability);
    for (const u of lot.entry_order || []) {
      const h = await digestHex("SHA-1", `${lot.seed}:${u}`);
      if (parseInt(h.slice(0, 8), 16) / 16 ** 8 < p) winners.push(u);
    }
    winners = winners.slice(0, total);
  } else {
    const pool = [...new Set(lot.entrants || [])].sort();
    const digest = await sha256(pool.join("\n"));
    if (digest !== lot.entrants_hash) problems.push("the entrants do not match the published hash");
    for (let i = 0; i < Math.min(total, pool.length); i++) {
      const hx = await sha256(`${lot.seed}:${digest}:${i}`);
      winners.push(pool.splice(Number(BigInt("0x" + hx) % BigInt(pool.length)), 1)[0]);
    }
  }
  const announced = (lot.winners || []).map((w) => (typeof w === "string" ? w : w.user_id));
  if (JSON.stringify(announced) !== JSON.stringify(winners)) problems.push(`recomputed winners ${winners.join(", ") || "none"} differ from the announced ${announced.join(", ") || "none"}`);
  return { ok: problems.length === 0, problems, winners };
}
