"""Tokens scoped to a tenant (and a database), so one pool can serve several customers.

A token file line is ``<token>`` (every tenant and database) or ``<token>
<tenant>`` or ``<token> <tenant>/<database>``. A scoped token reaches only the
routes under its tenant (and database): another tenant's or database's path is
``Forbidden``, as is creating a tenant; a token scoped to one database cannot
create, list or delete databases either. ``/auth/identity`` answers with the
token's own tenant and database, as Chroma's does for a user.
"""

from __future__ import annotations

from dataclasses import dataclass

from chromasnap.engine.errors import Forbidden


@dataclass(frozen=True)
class Scope:
    """What a token may reach: one tenant, and one database of it or all."""

    tenant: str
    database: str | None = None


def parse_token_line(line: str) -> tuple[str, Scope | None]:
    """``(token, scope)`` from one token file line (``scope`` ``None``: unscoped)."""
    parts = line.split()
    if len(parts) == 1:
        return parts[0], None
    if len(parts) != 2 or not parts[1].strip("/"):
        raise ValueError("a token line is '<token>', '<token> <tenant>' or "
                         "'<token> <tenant>/<database>'")
    tenant, _, database = parts[1].partition("/")
    return parts[0], Scope(tenant, database or None)


def path_scope(path: str) -> tuple[str | None, str | None]:
    """The tenant and database an API path names (``None`` where it names none)."""
    parts = path.strip("/").split("/")
    # api, v2, tenants, {tenant}, databases, {database}, ...
    tenant = parts[3] if len(parts) > 3 and parts[2] == "tenants" else None
    database = parts[5] if len(parts) > 5 and parts[4] == "databases" else None
    return tenant, database


def check_scope(scope: Scope, path: str, route: str) -> None:
    """``Forbidden`` unless a token of ``scope`` may call ``route`` on ``path``."""
    tenant, database = path_scope(path)
    if route == "create_tenant" or (tenant is not None and tenant != scope.tenant):
        raise Forbidden("Forbidden: this token is scoped to another tenant")
    if scope.database is None:
        return
    if route in ("create_database", "list_databases", "delete_database") or (
            database is not None and database != scope.database):
        raise Forbidden("Forbidden: this token is scoped to another database")
