"""Tokens scoped to a tenant and database: what each may reach (issue 18)."""

from __future__ import annotations

import pytest

from chromasnap.api.scopes import Scope, check_scope, parse_token_line
from chromasnap.engine.errors import Forbidden

COLS = "/api/v2/tenants/{t}/databases/{d}/collections"


def test_token_lines() -> None:
    assert parse_token_line("secret") == ("secret", None)
    assert parse_token_line("secret acme") == ("secret", Scope("acme"))
    assert parse_token_line("secret acme/main") == ("secret", Scope("acme", "main"))
    for bad in ("secret acme main", "secret /"):
        with pytest.raises(ValueError, match="token line"):
            parse_token_line(bad)


@pytest.mark.parametrize(("scope", "path", "route", "allowed"), [
    (Scope("acme", "main"), COLS.format(t="acme", d="main"), "list_collections", True),
    (Scope("acme", "main"), COLS.format(t="acme", d="main") + "/x/query", "query", True),
    (Scope("acme", "main"), COLS.format(t="acme", d="other"), "list_collections", False),
    (Scope("acme", "main"), COLS.format(t="beta", d="main"), "list_collections", False),
    (Scope("acme", "main"), "/api/v2/tenants/acme/databases", "create_database", False),
    (Scope("acme", "main"), "/api/v2/tenants/acme", "get_tenant", True),
    (Scope("acme", "main"), "/api/v2/auth/identity", "identity", True),
    (Scope("acme"), "/api/v2/tenants/acme/databases", "create_database", True),
    (Scope("acme"), COLS.format(t="acme", d="any"), "create_collection", True),
    (Scope("acme"), "/api/v2/tenants/beta", "get_tenant", False),
    (Scope("acme"), "/api/v2/tenants", "create_tenant", False),
])
def test_what_a_scoped_token_reaches(scope: Scope, path: str, route: str,
                                     allowed: bool) -> None:
    if allowed:
        check_scope(scope, path, route)
    else:
        with pytest.raises(Forbidden):
            check_scope(scope, path, route)
