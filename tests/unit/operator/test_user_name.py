"""The operator starts as a uid with no passwd entry and no USER/LOGNAME (issue 7).

kopf names its peering identity with ``getpass.getuser()``; in the image (uid 65532)
that raised ``KeyError: 'getpwuid(): uid not found: 65532'`` and the operator
crash-looped in every real cluster.
"""

from __future__ import annotations

import getpass
import pwd

import pytest
from kopf._core.engines import peering

from chromasnap.operator.controller.handlers import ensure_user_name


def _no_passwd_entry(uid: int) -> pwd.struct_passwd:
    raise KeyError(f"getpwuid(): uid not found: {uid}")


def test_identity_without_passwd_entry_or_user_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", _no_passwd_entry)
    with pytest.raises(KeyError):  # what kopf hit before the fix
        getpass.getuser()

    ensure_user_name()

    identity = peering.detect_own_id(manual=False)
    assert identity.startswith("uid-")


def test_existing_user_name_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "someone")
    ensure_user_name()
    assert getpass.getuser() == "someone"
