"""``trellis keys create|list|revoke``: API keys for ``trellis serve`` (stored hashed).

With no key configured the API is open to anyone who can reach it, which is why ``trellis
serve`` then binds to 127.0.0.1 only. Roles and what they may do: :mod:`trellis.auth`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from trellis.auth import Role, create_key
from trellis.cli._common import EXIT_INVALID, STATE, console, err_console, fail, print_json, run_async

keys_app = typer.Typer(help="API keys of the REST API (roles: viewer, operator, approver, admin).")


@keys_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="What the key may do (see `trellis.auth`).")],
    name: Annotated[str, typer.Option(help="Who uses it (recorded as the actor of every call).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key and print its secret, once: it is stored only as a salted hash."""

    async def main() -> dict[str, Any]:
        from trellis.store import open_store

        store = await open_store(STATE.settings().database_url)
        try:
            new = await create_key(store, name=name, role=role)
        finally:
            await store.close()
        return {**new.record.to_dict(), "key": new.secret}

    if not name.strip():
        fail("--name must not be empty", EXIT_INVALID)
    created = run_async(main)
    if as_json:
        print_json(created)
    else:
        typer.echo(created["key"])
    err_console.print(
        f"created key {created['id']} ({created['name']}, {created['role']}); "
        "the secret above is shown only now — store it safely",
        highlight=False,
    )


@keys_app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List keys (never their secrets)."""

    async def main() -> list[dict[str, Any]]:
        from trellis.store import open_store

        store = await open_store(STATE.settings().database_url)
        try:
            return [k.to_dict() for k in await store.list_api_keys(include_revoked=include_revoked)]
        finally:
            await store.close()

    keys = run_async(main)
    if as_json:
        print_json(keys)
        return
    if not keys:
        console.print("no API keys: the API is open (and `trellis serve` binds to 127.0.0.1 only)")
        return
    table = Table("id", "name", "role", "created", "revoked")
    for k in keys:
        table.add_row(k["id"], k["name"], k["role"], k["created_at"], k["revoked_at"] or "")
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id (from `keys list`) or name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Revoke a key; servers refuse it within their key cache time (5 s by default)."""

    async def main() -> list[dict[str, Any]]:
        from trellis.store import open_store

        store = await open_store(STATE.settings().database_url)
        try:
            return [k.to_dict() for k in await store.revoke_api_key(key)]
        finally:
            await store.close()

    revoked = run_async(main)
    if not revoked:
        fail(f"no active API key with id or name {key!r} (see `trellis keys list`)", EXIT_INVALID)
    if as_json:
        print_json(revoked)
    else:
        for k in revoked:
            console.print(f"revoked {k['id']} ({k['name']}, {k['role']})")
