"""The ``ChromaDatabase`` custom resource as typed Python: a pool of collections.

A ChromaDatabase is one endpoint for a whole Chroma database: applications
create, list and delete their own collections through ``chromadb.HttpClient``,
all stored under one bucket root (``chromasnap pool``). The models mirror
``crds/chromasnap.dev_chromadatabases.yaml`` field for field, with the same
defaults (a unit test keeps the two in step), and reuse the ChromaCollection's
models where a field means the same thing (storage, resources, retention, network
policy).

Every pod of a pool writes, reads and runs compaction passes: the pool has no
separate writer, reader and compactor workloads (see docs/operator.md), so the
spec has one ``pool`` section for its pods and a ``compactor`` section for how
often and how widely they fold what was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, ValidationError

from chromasnap.operator.crd import (
    MAX_NAME_LENGTH,
    CollectionSpec,
    DeletionPolicy,
    FlushWindow,
    Identity,
    LocalObjectReference,
    NetworkPolicySpec,
    PositiveQuantity,
    PullPolicy,
    ResourceRequirements,
    RetentionSpec,
    SecretKey,
    ServiceAccountSpec,
    SpecError,
    SpecModel,
    StorageSpec,
    explain,
    parse_quantity,
)


class PoolPodsSpec(SpecModel):
    """The pool's Deployment: pods that each serve the whole API over the pool."""

    replicas: Annotated[int, Field(ge=0, le=100)] = 2
    #: The emptyDir loaded collections are kept in; the pod closes the least recently
    #: read ones to stay within 90% of it.
    cache_size: PositiveQuantity = "10Gi"
    #: Memory the loaded collections may fill, with everything else the process holds
    #: (its RSS); unset: no memory budget. Keep it below the memory limit.
    memory_budget: PositiveQuantity | None = None
    max_loaded_collections: Annotated[int, Field(ge=1, le=100_000)] = 64
    flush_window: FlushWindow = Field(default_factory=FlushWindow)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)

    @property
    def memory_budget_bytes(self) -> int:
        """The budget in bytes (0: none)."""
        return int(parse_quantity(self.memory_budget)) if self.memory_budget else 0


class PoolCompactorSpec(SpecModel):
    """The pods' compaction passes over the collections written to."""

    interval_seconds: Annotated[int, Field(ge=1, le=86_400)] = 30
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4


class PoolAuthSpec(SpecModel):
    """Bearer tokens, each optionally scoped to a tenant and database.

    The Secret is only referenced: the pods mount the one key as a file; the
    operator never reads a value. Each line of the key is a token, optionally
    followed by its scope (``token tenant/database``), as ``chromasnap pool
    --auth-token-file`` reads it.
    """

    secret_ref: LocalObjectReference
    tokens_key: SecretKey = "tokens"


class ChromaDatabaseSpec(SpecModel):
    """``spec`` of a ChromaDatabase."""

    storage: StorageSpec
    service_account: ServiceAccountSpec = Field(default_factory=ServiceAccountSpec)
    pool: PoolPodsSpec = Field(default_factory=PoolPodsSpec)
    compactor: PoolCompactorSpec = Field(default_factory=PoolCompactorSpec)
    #: As a ChromaCollection's, for every collection of the pool (each pass runs each
    #: written collection's compactor with it); the grace period also keeps a deleted
    #: collection's bytes that long before a pass reclaims them.
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    image: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    image_pull_policy: PullPolicy | None = None
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    #: As a ChromaCollection's: ``Delete`` empties the pool's root (every collection of
    #: it) when the ChromaDatabase is deleted (``controller/purge.py``).
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    auth: PoolAuthSpec | None = None
    network_policy: NetworkPolicySpec | None = None


def parse_database_spec(body: Mapping[str, Any]) -> ChromaDatabaseSpec:
    """Validate the ``spec`` of a ChromaDatabase; :class:`SpecError` names every bad field."""
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec: missing or not an object")
    try:
        spec_model = ChromaDatabaseSpec.model_validate(dict(spec), by_alias=True)
    except ValidationError as e:
        raise SpecError(explain(e)) from e
    return spec_model


@dataclass(frozen=True)
class ChromaDatabase:
    """What the builders need of one ChromaDatabase: identity and parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: ChromaDatabaseSpec
    generation: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChromaDatabase:
        """Build from a kopf ``body`` (or any dict shaped like the API object)."""
        who = Identity.of(body, "it names the pool's Service")
        return cls(name=who.name, namespace=who.namespace, uid=who.uid,
                   spec=parse_database_spec(body), generation=who.generation)


def declared_database(body: Mapping[str, Any]) -> str | None:
    """The ChromaDatabase a ChromaCollection body declares itself in (``spec.database``),
    or ``None`` for a collection with pods of its own."""
    spec = body.get("spec")
    value = spec.get("database") if isinstance(spec, Mapping) else None
    return str(value) if value else None


class DeclaredSpec(SpecModel):
    """What a ChromaCollection in a pool uses of its spec (the rest is the pool's)."""

    database: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    collection: CollectionSpec
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN


@dataclass(frozen=True)
class DeclaredCollection:
    """A ChromaCollection that declares a collection of a ChromaDatabase's pool."""

    name: str
    namespace: str
    uid: str
    spec: DeclaredSpec
    generation: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeclaredCollection:
        """Build from a kopf ``body``; :class:`SpecError` names every bad field."""
        who = Identity.of(body, "a ChromaCollection's name")
        spec = body.get("spec")
        if not isinstance(spec, Mapping):
            raise SpecError("spec: missing or not an object")
        try:
            parsed = DeclaredSpec.model_validate(
                {k: v for k, v in spec.items() if k in ("database", "collection",
                                                        "deletionPolicy")}, by_alias=True)
        except ValidationError as e:
            raise SpecError(explain(e)) from e
        return cls(name=who.name, namespace=who.namespace, uid=who.uid, spec=parsed,
                   generation=who.generation)
