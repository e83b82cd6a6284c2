"""The page's own logic, run in real Chromium against the Python references.

* ``lottery.js`` ``verifyDraw`` (the "verify the draw" button) against
  ``danmaku.draw.verify`` on seeded random audits: timed and instant, unicode user ids
  (JavaScript sorts UTF-16 units, Python code points), more prizes than entrants, no
  entrants; and tampered audits (a seed, an entrant list) that it must refuse.
* ``api.js`` ``claims``/``usable`` (reading the viewer token the page holds) on real
  tokens from ``core.tokens`` and on garbage: never an exception, garbage is no token.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

from core.tokens import issue_token
from danmaku.draw import commitment, entrants_digest, verify
from tests.browser import LAUNCH_ARGS, chromium_executable

ALPHABET = "abcXYZ019_-.:é中文😀\U0001f600\uffff\u00e9"


def _user(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))


def _audit(rng: random.Random) -> dict[str, Any]:
    seed = secrets.token_hex(32)
    entrants = sorted({_user(rng) for _ in range(rng.randint(0, 40))})
    prizes = [{"name": f"p{i}", "stock": rng.randint(1, 5)} for i in range(rng.randint(1, 3))]
    audit: dict[str, Any] = {
        "seed": seed,
        "commitment": commitment(seed),
        "prizes": prizes,
        "mode": rng.choice(["timed", "instant"]),
    }
    if audit["mode"] == "timed":
        audit["entrants"] = entrants
        audit["entrants_hash"] = entrants_digest(entrants)
    else:
        order = list(entrants)
        rng.shuffle(order)
        audit["entry_order"] = order
        audit["probability"] = rng.choice([0.0, 0.1, 0.5, 1.0])
    return audit


VERIFY = """async (audits) => {
  const { verifyDraw } = await import('/viewer/assets/lottery.js');
  const out = [];
  for (const a of audits) {
    try { out.push({ winners: await verifyDraw(a) }); }
    catch (e) { out.push({ error: String(e.message || e) }); }
  }
  return out;
}"""

CLAIMS = """async ([tokens, room]) => {
  const { claims, usable } = await import('/viewer/assets/api.js');
  return tokens.map((t) => {
    try { return { claims: claims(t), usable: !!usable(t, room) }; }
    catch (e) { return { thrown: String(e) }; }
  });
}"""


async def test_page_logic_matches_the_python_references(server: Any) -> None:
    from playwright.async_api import async_playwright

    rng = random.Random(20261205)
    audits = [_audit(rng) for _ in range(60)]
    tampered = []
    for a in audits[:20]:
        bad = dict(a)
        bad["seed"] = ("0" if a["seed"][0] != "0" else "1") + a["seed"][1:]
        tampered.append(bad)
        if a["mode"] == "timed" and a["entrants"]:
            dropped = dict(a)
            dropped["entrants"] = a["entrants"][1:]
            tampered.append(dropped)
    secret = server.config.server.secret
    good = issue_token(secret, "u-1", "Ann", "viewer", ttl=3600, room="live/x")
    other_room = issue_token(secret, "u-2", "Bo", "viewer", ttl=3600, room="live/y")
    expiring = issue_token(secret, "u-3", "Cy", "viewer", ttl=30, room="live/x")
    garbage = ["", ".", "v1..", "v1.!!!.x", "v1." + "A" * 5000 + ".x", "v1.bnVsbA.x", "a.b.c.d"]
    noise = "v1.-_=+/AZaz09%"
    garbage += ["".join(rng.choice(noise) for _ in range(rng.randint(0, 80))) for _ in range(40)]

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            await page.goto(server.http_url + "/viewer/assets/style.css")  # the origin, no app
            got = await page.evaluate(VERIFY, audits + tampered)
            tokens = [good, other_room, expiring, *garbage]
            checked = await page.evaluate(CLAIMS, [tokens, "live/x"])
        finally:
            await browser.close()

    for audit, js in zip(audits, got[: len(audits)], strict=True):
        assert js == {"winners": verify(audit)}, (audit, js)
    assert sum(1 for js in got[: len(audits)] if js["winners"]) > 20  # not all empty draws
    for audit, js in zip(tampered, got[len(audits) :], strict=True):
        assert "error" in js, (audit, js)

    assert checked[0]["claims"]["uid"] == "u-1" and checked[0]["usable"] is True
    assert checked[1]["claims"]["uid"] == "u-2" and checked[1]["usable"] is False  # other room
    assert checked[2]["usable"] is False  # expires within the minute
    for token, js in zip(garbage, checked[3:], strict=True):
        assert "thrown" not in js and js["usable"] is False, (token, js)
