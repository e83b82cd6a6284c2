"""Operator commands: ``berrylive user add|list|passwd|disable`` and ``berrylive token create``.

They work on the database directly (no server needed), after migrating it. Also runnable
as ``python -m control.ops_cli ...`` with the same arguments.

Hooked into ``berrylive`` by ``control.cli``: ``ops_cli.add_parsers(sub)`` before parsing,
then ``if hasattr(args, "ops"): return ops_cli.run(args, config)`` after loading the config.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from control.accounts import AccountError, Accounts, Role
from core.db import create_engine, migrate

MIGRATIONS = Path(__file__).parent / "migrations"


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (default ./data)")


def add_parsers(sub: Any) -> None:
    """Add ``user`` and ``token`` to the ``berrylive`` sub-command parser."""
    p_user = sub.add_parser("user", help="manage operator, anchor and moderator accounts")
    users = p_user.add_subparsers(dest="user_command", required=True)
    p = users.add_parser("add", help="create an account")
    p.add_argument("username")
    # dest is not "role": the server's --role (origin/edge) reads that name
    p.add_argument("--role", dest="account_role", required=True, choices=[r.value for r in Role])
    p.add_argument("--display-name", default="")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _server_args(p)
    p.set_defaults(ops=_user_add)
    p = users.add_parser("list", help="list accounts")
    _server_args(p)
    p.set_defaults(ops=_user_list)
    p = users.add_parser("passwd", help="set a new password (revokes all their tokens)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    _server_args(p)
    p.set_defaults(ops=_user_passwd)
    p = users.add_parser("disable", help="disable an account (ends its sessions)")
    p.add_argument("username")
    _server_args(p)
    p.set_defaults(ops=_user_disable)
    p_token = sub.add_parser("token", help="API tokens")
    tokens = p_token.add_subparsers(dest="token_command", required=True)
    p = tokens.add_parser("create", help="create an API token for a user (printed once)")
    p.add_argument("username")
    p.add_argument("--name", required=True)
    p.add_argument("--ttl", type=int, help="validity in seconds (default: no expiry)")
    _server_args(p)
    p.set_defaults(ops=_token_create)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("invalid", "the passwords differ")
    return first


async def _accounts(config: Any) -> tuple[Accounts, Any]:
    engine = create_engine(config.database_url)
    await migrate(engine, MIGRATIONS, "control")
    return Accounts(engine), engine


async def _user_add(args: argparse.Namespace, config: Any) -> int:
    password = _password(args)
    accounts, engine = await _accounts(config)
    try:
        user = await accounts.create_user(
            args.username, password, Role(args.account_role), args.display_name
        )
    finally:
        await engine.dispose()
    print(f"created {user.role.value} {user.username} (id {user.id})")
    return 0


async def _user_list(args: argparse.Namespace, config: Any) -> int:
    accounts, engine = await _accounts(config)
    try:
        offset = 0
        while True:
            items, total = await accounts.list_users(100, offset)
            for u in items:
                flag = " (disabled)" if u.disabled else ""
                print(f"{u.id}\t{u.username}\t{u.role.value}\t{u.display_name}{flag}")
            offset += len(items)
            if not items or offset >= total:
                break
    finally:
        await engine.dispose()
    return 0


async def _find(accounts: Accounts, username: str) -> Any:
    user = await accounts.get_user_by_name(username)
    if user is None:
        raise AccountError("not_found", f"no user {username!r}")
    return user


async def _user_passwd(args: argparse.Namespace, config: Any) -> int:
    password = _password(args)
    accounts, engine = await _accounts(config)
    try:
        user = await _find(accounts, args.username)
        await accounts.update_user(user.id, password=password)
    finally:
        await engine.dispose()
    print(f"password of {args.username} changed; their sessions and API tokens are revoked")
    return 0


async def _user_disable(args: argparse.Namespace, config: Any) -> int:
    accounts, engine = await _accounts(config)
    try:
        user = await _find(accounts, args.username)
        await accounts.update_user(user.id, disabled=True)
    finally:
        await engine.dispose()
    print(f"{args.username} disabled")
    return 0


async def _token_create(args: argparse.Namespace, config: Any) -> int:
    accounts, engine = await _accounts(config)
    try:
        user = await _find(accounts, args.username)
        token, _info = await accounts.issue_token(user.id, "api", name=args.name, ttl=args.ttl)
    finally:
        await engine.dispose()
    print(token)
    return 0


def run(args: argparse.Namespace, config: Any) -> int:
    try:
        return int(asyncio.run(args.ops(args, config)))
    except AccountError as exc:
        print(f"berrylive: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    from control.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="berrylive", description=__doc__)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, None, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"berrylive: configuration error: {exc}", file=sys.stderr)
        return 2
    return run(args, config)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
