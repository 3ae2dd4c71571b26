"""A create-collection body, checked as Chroma 1.5.9 checks it, and the settings it asks for.

chromasnap serves collections declared as resources, so a create request can
only be a ``get_or_create`` of the served one. Measured against ``chroma run``
1.5.9, Chroma checks the whole body even then, and then ignores every setting
in it: an existing collection keeps its space, HNSW parameters, index kind,
metadata and embedding function, without a word. What it refuses, and how:

* a body that does not deserialize (a wrong type anywhere, an unknown key in
  ``configuration.hnsw`` or ``configuration.spann``, an unknown space, a
  ``null`` or nested metadata value): 422, a plain ``ChromaError``, "Failed to
  deserialize the JSON body into the target type: <path>: <what>";
* a space that is not a string: 400, "Failed to parse the request body as JSON";
* both ``configuration.hnsw`` and ``configuration.spann``: 400;
* an invalid name, empty metadata or an empty metadata key: 400;
* ``hnsw:*`` metadata that does not parse as HNSW parameters (an unknown
  ``hnsw:`` key, a space Chroma does not name, a float or negative where a
  count belongs, ``batch_size`` or ``sync_threshold`` under 2): 400.

This module does the same (without serde's "at line 1 column N"), and
``ignored_settings`` names what a valid request asked for that the collection
does not have, so the route can say so in a warning where Chroma is silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chromasnap.api.deserialize import DESERIALIZE, kind, metadata_value_ok, serde_error
from chromasnap.config import COLLECTION_NAME_RE
from chromasnap.engine.errors import InvalidArgument, Unprocessable

SPACES = ("l2", "cosine", "ip")
HNSW_FIELDS = ("space", "ef_construction", "ef_search", "max_neighbors", "num_threads",
               "resize_factor", "sync_threshold", "batch_size")
SPANN_FIELDS = ("search_nprobe", "write_nprobe", "space", "ef_construction", "ef_search",
                "max_neighbors", "reassign_neighbor_count", "split_threshold", "merge_threshold")
#: Legacy ``hnsw:*`` metadata keys and the configuration field each one sets.
HNSW_METADATA = {
    "hnsw:space": "space",
    "hnsw:construction_ef": "ef_construction",
    "hnsw:M": "max_neighbors",
    "hnsw:search_ef": "ef_search",
    "hnsw:num_threads": "num_threads",
    "hnsw:resize_factor": "resize_factor",
    "hnsw:batch_size": "batch_size",
    "hnsw:sync_threshold": "sync_threshold",
}
#: Counts hnswlib cannot batch or sync below (Chroma refuses 0 and 1 in metadata).
AT_LEAST_2 = ("batch_size", "sync_threshold")
_EF_TYPES = ("legacy", "known", "unknown")
_USIZE_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
_I64_MAX = (1 << 63) - 1  # metadata integers are i64; larger ones arrive as floats


@dataclass(frozen=True)
class CreateRequest:
    """A valid create-collection body."""

    name: str
    get_or_create: bool = False
    #: Index settings asked for, by configuration field: ``(where, value)``;
    #: ``configuration.hnsw`` wins over ``hnsw:*`` metadata, as it does in Chroma.
    hnsw: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: ``configuration.spann``, when the request asks for a SPANN index.
    spann: dict[str, Any] | None = None
    #: The body's own ``metadata``, ``configuration`` and ``schema``, for a pool that
    #: creates the collection (chromadb derives the stored configuration from them).
    metadata: dict[str, Any] | None = None
    configuration: dict[str, Any] | None = None
    schema: dict[str, Any] | None = None


def _check_count(path: str, v: Any, top: int, type_name: str) -> None:
    """``v`` must be a non-negative integer up to ``top`` (or null: unset)."""
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise serde_error(path, f"invalid type: {kind(v)}, expected {type_name}")
    if not 0 <= v <= top:
        raise serde_error(path, f"invalid value: integer `{v}`, expected {type_name}")


def _check_space(path: str, v: Any) -> None:
    if v is None:
        return
    if not isinstance(v, str):
        # Chroma's space parser fails before serde's type check, with this wording.
        raise InvalidArgument(f"Failed to parse the request body as JSON: {path}: expected value")
    if v not in SPACES:
        raise serde_error(path, f"unknown variant `{v}`, expected one of `l2`, `cosine`, `ip`")


def _check_struct(path: str, v: Any, fields: tuple[str, ...], type_name: str) -> dict[str, Any]:
    """An object whose keys are all in ``fields`` (serde's ``deny_unknown_fields``)."""
    if not isinstance(v, dict):
        raise serde_error(path, f"invalid type: {kind(v)}, expected struct {type_name}")
    for k in v:
        if k not in fields:
            expected = ", ".join(f"`{f}`" for f in fields)
            raise serde_error(f"{path}.{k}", f"unknown field `{k}`, expected one of {expected}")
    return v


def _check_hnsw_config(path: str, v: Any) -> dict[str, Any]:
    hnsw = _check_struct(path, v, HNSW_FIELDS, "HnswConfiguration")
    for k, val in hnsw.items():
        if k == "space":
            _check_space(f"{path}.space", val)
        elif k == "resize_factor":
            if val is not None and (isinstance(val, bool) or not isinstance(val, int | float)):
                raise serde_error(f"{path}.{k}", f"invalid type: {kind(val)}, expected f64")
        else:
            _check_count(f"{path}.{k}", val, _USIZE_MAX, "usize")
    return hnsw


def _check_spann_config(path: str, v: Any) -> dict[str, Any]:
    spann = _check_struct(path, v, SPANN_FIELDS, "SpannConfiguration")
    for k, val in spann.items():
        if k == "space":
            _check_space(f"{path}.space", val)
        else:
            _check_count(f"{path}.{k}", val, _U32_MAX, "u32")
    return spann


def _check_embedding_function(path: str, v: Any) -> None:
    if v is None:
        return
    if not isinstance(v, dict):
        raise serde_error(path, f"invalid type: {kind(v)}, expected internally tagged enum "
                          "EmbeddingFunctionConfiguration")
    ef_type = v.get("type")
    if ef_type is None:
        raise serde_error(path, "missing field `type`")
    if ef_type not in _EF_TYPES:
        raise serde_error(f"{path}.type",
                          f"unknown variant `{ef_type}`, expected one of `legacy`, `known`, "
                          "`unknown`")
    if ef_type == "known":
        for needed in ("name", "config"):
            if needed not in v:
                raise serde_error(path, f"missing field `{needed}`")


def _check_metadata_shape(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        shown = "sequence" if isinstance(v, list) else kind(v)
        raise serde_error("metadata", f"invalid type: {shown}, expected a map")
    for k, val in v.items():
        if not metadata_value_ok(val, sparse=False):
            raise serde_error(f"metadata.{k}", "data did not match any variant of untagged enum "
                              "MetadataValue")
    return v


def _hnsw_metadata_value_ok(setting: str, v: Any) -> bool:
    if setting == "space":
        return v in SPACES
    if isinstance(v, bool):
        return False
    if setting == "resize_factor":
        return isinstance(v, int | float)
    low = 2 if setting in AT_LEAST_2 else 0
    return isinstance(v, int) and low <= v <= _I64_MAX


def _hnsw_metadata(metadata: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """The ``hnsw:*`` entries by configuration field; 400 if they do not parse."""
    out: dict[str, tuple[str, Any]] = {}
    for k, v in metadata.items():
        if not k.startswith("hnsw:"):
            continue
        setting = HNSW_METADATA.get(k)
        if setting is None or not _hnsw_metadata_value_ok(setting, v):
            raise InvalidArgument("Failed to parse hnsw parameters from segment metadata")
        out[setting] = (f"metadata {k}", v)
    return out


def required_name(body: Mapping[str, Any]) -> str:
    """The body's ``name``, or serde's error for a missing or non-string one."""
    if "name" not in body:
        raise Unprocessable(f"{DESERIALIZE}missing field `name`")
    name = body["name"]
    if not isinstance(name, str):
        raise serde_error("name", f"invalid type: {kind(name)}, expected a string")
    return name


def parse_create(body: Mapping[str, Any]) -> CreateRequest:
    """The create-collection body, or the error Chroma 1.5.9 gives for it."""
    name = required_name(body)
    goc = body.get("get_or_create", False)
    if not isinstance(goc, bool):
        raise serde_error("get_or_create", f"invalid type: {kind(goc)}, expected a boolean")
    metadata = _check_metadata_shape(body.get("metadata"))
    hnsw_cfg: dict[str, Any] | None = None
    spann: dict[str, Any] | None = None
    config = body.get("configuration")
    if config is not None:
        if not isinstance(config, dict):
            raise serde_error("configuration", f"invalid type: {kind(config)}, expected struct "
                              "CollectionConfiguration")
        # Other top-level keys are ignored, as Chroma ignores them.
        if config.get("hnsw") is not None:
            hnsw_cfg = _check_hnsw_config("configuration.hnsw", config["hnsw"])
        if config.get("spann") is not None:
            spann = _check_spann_config("configuration.spann", config["spann"])
        _check_embedding_function("configuration.embedding_function",
                                  config.get("embedding_function"))
    if hnsw_cfg is not None and spann is not None:
        raise InvalidArgument("Multiple vector index configurations provided")
    if not COLLECTION_NAME_RE.match(name) or ".." in name:
        raise InvalidArgument(
            "Validation error: name: Expected a name containing 3-512 characters from "
            "[a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. "
            f"Got: {name}")
    asked: dict[str, tuple[str, Any]] = {}
    if metadata is not None:
        if not metadata:
            raise InvalidArgument("Validation error: metadata: Metadata cannot be empty")
        if "" in metadata:
            raise InvalidArgument("Validation error: metadata: Metadata key cannot be empty")
        asked = _hnsw_metadata(metadata)
    for k, v in (hnsw_cfg or {}).items():
        if v is not None:
            asked[k] = (f"configuration.hnsw.{k}", v)
    schema = body.get("schema")
    return CreateRequest(name, goc, asked, spann, metadata, config,
                         schema if isinstance(schema, dict) else None)


def ignored_settings(req: CreateRequest, model: Mapping[str, Any]) -> list[str]:
    """What ``req`` asks for that the existing collection ``model`` does not have.

    One ``"<where> <asked> (the collection: <has>)"`` each; empty when the
    request asks for nothing or for what the collection already is.
    """
    config = model.get("configuration_json") or {}
    has = config.get("hnsw") or {}
    out = []
    if req.spann is not None:
        out.append("configuration.spann, a SPANN index (the collection: an HNSW index)")
    for setting, (where, value) in req.hnsw.items():
        current = has.get(setting)
        if current != value:
            shown = "unset" if current is None else repr(current)
            out.append(f"{where} {value!r} (the collection: {shown})")
    return out
