"""Bearer-token authentication (``spec.auth``): the token files each component mounts.

The tokens stay in the user's Secret. Pods mount only the keys their role needs,
as read-only files (mode 0440: the runtime user reads them through ``fsGroup``),
and get the paths in env, never a value:

- writers: ``write`` (the tokens they accept) and ``push`` (the token they
  present when pushing deltas to readers);
- readers: ``read`` and ``write`` (both accepted; writes are forwarded with the
  client's token, which the writers check again) and ``push`` (accepted on the
  internal port only);
- compactor: nothing (it serves no HTTP).

File names are fixed whatever the Secret's key names, so the env contract does
not depend on the spec. Changing the Secret's name or keys changes the pod
template and rolls the pods; new token values are read when a pod starts.
"""

from __future__ import annotations

from typing import Any

from chromasnap.config import ENV_PREFIX
from chromasnap.operator.crd import AuthSpec, ChromaCollection
from chromasnap.operator.specs.naming import COMPONENT_READER, COMPONENT_WRITER

AUTH_VOLUME = "auth"
AUTH_DIR = "/var/run/chromasnap/auth"
#: Owner (root) and group (the pod's fsGroup, which the runtime user is in) may read.
AUTH_FILE_MODE = 0o440
READ_FILE = "read"
WRITE_FILE = "write"
PUSH_FILE = "push"

#: The variables ``config.py`` reads: accepted tokens (comma-separated files), push token.
AUTH_TOKEN_FILE_ENV = ENV_PREFIX + "AUTH_TOKEN_FILE"
PUSH_TOKEN_FILE_ENV = ENV_PREFIX + "PUSH_TOKEN_FILE"


def token_path(file: str) -> str:
    """Where a token file is mounted."""
    return f"{AUTH_DIR}/{file}"


def _files(auth: AuthSpec, component: str) -> list[tuple[str, str]]:
    """(key in the Secret, file name) of what ``component`` mounts."""
    read = (auth.read_tokens_key, READ_FILE)
    write = (auth.write_tokens_key, WRITE_FILE)
    push = (auth.push_token_key, PUSH_FILE)
    if component == COMPONENT_WRITER:
        return [write, push]
    if component == COMPONENT_READER:
        return [read, write, push]
    return []


def auth_volumes(cc: ChromaCollection, component: str) -> list[dict[str, Any]]:
    """The Secret volume ``component`` needs (none without ``spec.auth``, or for the compactor).

    ``items`` selects only the role's keys; a missing key or Secret keeps the pod from
    starting (fail closed) rather than starting it without authentication.
    """
    auth = cc.spec.auth
    files = _files(auth, component) if auth is not None else []
    if auth is None or not files:
        return []
    return [
        {
            "name": AUTH_VOLUME,
            "secret": {
                "secretName": auth.secret_ref.name,
                "defaultMode": AUTH_FILE_MODE,
                "items": [{"key": key, "path": path} for key, path in files],
            },
        }
    ]


def auth_mounts(cc: ChromaCollection, component: str) -> list[dict[str, Any]]:
    """The read-only mount of :func:`auth_volumes` at :data:`AUTH_DIR`."""
    if not auth_volumes(cc, component):
        return []
    return [{"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True}]


def auth_env(cc: ChromaCollection, component: str) -> dict[str, str]:
    """``CHROMASNAP_AUTH_TOKEN_FILE`` and ``CHROMASNAP_PUSH_TOKEN_FILE``: paths, never tokens."""
    auth = cc.spec.auth
    if auth is None:
        return {}
    if component == COMPONENT_WRITER:
        accepted = [WRITE_FILE]
    elif component == COMPONENT_READER:
        accepted = [READ_FILE, WRITE_FILE]
    else:
        return {}
    return {
        AUTH_TOKEN_FILE_ENV: ",".join(token_path(f) for f in accepted),
        PUSH_TOKEN_FILE_ENV: token_path(PUSH_FILE),
    }
