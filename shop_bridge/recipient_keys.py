"""``python -m shop_bridge.recipient_keys``: the keys of sealed recipients.

``keygen <key id>`` prints a new key-file line (32 random bytes, base64); ``rewrap
[--config file]`` re-seals every stored recipient and address under the current key
(the last line of ``shop.recipient_key_file``) and exits 1 while some are left (sealed
under a key this node does not have). See :mod:`shop_bridge.recipients`.
"""

from __future__ import annotations

import base64
import os

from shop_bridge.recipients import KID_RE, load_sealer, rewrap


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(
        prog="python -m shop_bridge.recipient_keys",
        description="Keys of the shop's sealed recipients (see docs/shop.md, 'Recipients').",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="print a new key-file line")
    kg.add_argument("key_id", help="1..16 of A-Za-z0-9_-, e.g. 2026-12")
    rw = sub.add_parser("rewrap", help="re-seal stored recipients under the current key")
    rw.add_argument("--config", default=None, help="berrylive config file")
    args = parser.parse_args(argv)
    if args.cmd == "keygen":
        if not KID_RE.fullmatch(args.key_id):
            parser.error("key id: 1..16 of A-Za-z0-9_-")
        print(f"{args.key_id} {base64.b64encode(os.urandom(32)).decode()}")
        return 0
    return asyncio.run(_rewrap_cli(args.config))


async def _rewrap_cli(config_path: str | None) -> int:
    from control.config import load_config
    from core.db import create_engine

    cfg = load_config(config_path)
    engine = create_engine(cfg.database_url)
    try:
        sealer = load_sealer(cfg.shop.recipient_key_file, cfg.server.secret)
        result = await rewrap(engine, sealer)
        print(f"re-sealed {result.rewrapped}, left {result.left}, unreadable {result.unreadable}")
        return 0 if result.left == 0 else 1
    finally:
        await engine.dispose()


if __name__ == "__main__":
    raise SystemExit(_main())
