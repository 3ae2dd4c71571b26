"""The ``ChromaCollection`` custom resource as typed Python: what the operator reads.

These models mirror ``crds/chromasnap.dev_chromacollections.yaml`` field for
field, with the same defaults and ranges (a unit test keeps the two in step),
so the operator works the same whether or not the API server already defaulted
and validated the object. They also check what an OpenAPI schema cannot (a
positive cache size, requests not above limits, a sane cron line): the handlers
turn a :class:`SpecError` into a ``False`` condition with its message.

Size: one model per object of the CRD's schema, kept in one file on purpose, so
that the file reads like the schema and the test comparing the two walks one
module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from chromasnap.config import COLLECTION_NAME_RE, DEFAULT_SPACE, ReadLevel, Space

#: Condition types the operator reports (``Ready`` summarises the other four).
CONDITION_READY = "Ready"
CONDITION_WRITERS_READY = "WritersReady"
CONDITION_READERS_READY = "ReadersReady"
CONDITION_COMPACTOR_HEALTHY = "CompactorHealthy"
CONDITION_SNAPSHOT_AVAILABLE = "SnapshotAvailable"
CONDITION_TYPES = (
    CONDITION_READY,
    CONDITION_WRITERS_READY,
    CONDITION_READERS_READY,
    CONDITION_COMPACTOR_HEALTHY,
    CONDITION_SNAPSHOT_AVAILABLE,
)


#: Longest ``metadata.name`` a ChromaCollection may have: the children append
#: suffixes (``-readers-headless`` for a Service, 63 characters at most;
#: ``-compactor`` for a CronJob, 52 at most; on-demand Jobs add a run id).
MAX_NAME_LENGTH = 40

# Kubernetes' quantity grammar (resource.Quantity): a number and an optional
# binary (Ki..Ei), decimal (n..E) or exponent suffix.
QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# Five cron fields (or a @macro), as the CronJob controller accepts them; the
# controller does the full parse, this only catches the obvious mistakes early.
CRON_RE = re.compile(
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+){4})$"
)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()=-]+(/[A-Za-z0-9!_.*'()=-]+)*$")
ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[^\s?#]*)?$")
RESOURCE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: A key of a Secret's data (what Kubernetes accepts, and what a volume item can name).
SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")


class SpecError(ValueError):
    """A ChromaCollection spec the operator cannot act on; ``str()`` is user-facing."""


def parse_quantity(value: str | int) -> Decimal:
    """Parse a Kubernetes quantity (``10Gi``, ``500M``, ``1.5``, ``2e3``) into a number.

    Raises ``ValueError`` naming the accepted forms.
    """
    text = str(value).strip()
    m = QUANTITY_RE.match(text)
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 512Mi, 10Gi, 1G, 250m)")
    try:
        number = Decimal(m.group("num"))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{value!r} is not a number") from e
    suffix = m.group("suffix") or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number * (Decimal(10) ** _DECIMAL[suffix])
    return number * (Decimal(10) ** int(suffix[1:]))


def _quantity_text(value: object) -> object:
    """Accept YAML integers for quantities (``cacheSize: 1073741824``) but keep text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _valid_quantity(value: str) -> str:
    parse_quantity(value)
    return value


def _positive_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


Quantity = Annotated[str, BeforeValidator(_quantity_text), AfterValidator(_valid_quantity)]
PositiveQuantity = Annotated[Quantity, AfterValidator(_positive_quantity)]


class PullPolicy(StrEnum):
    """Kubernetes' image pull policies."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class DeletionPolicy(StrEnum):
    """What happens to the bucket's data when the ChromaCollection is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; frozen so specs can be shared safely.

    Unknown fields are ignored rather than refused: the API server already
    prunes them, and a newer CRD must not break an older operator.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_enum_values=False,
    )


#: The base of every spec model, for the other resources' models (``database``).
SpecModel = _Model


class HnswSpec(_Model):
    """HNSW index parameters, named as Chroma names them (``hnsw:M`` etc.)."""

    m: Annotated[int, Field(ge=2, le=512)] = 16
    construction_ef: Annotated[int, Field(ge=1, le=4096)] = 100
    search_ef: Annotated[int, Field(ge=1, le=4096)] = 100

    @model_validator(mode="after")
    def _ef_at_least_m(self) -> HnswSpec:
        # hnswlib silently raises ef_construction to M; refuse instead of surprising.
        if self.construction_ef < self.m:
            raise ValueError(
                f"constructionEf ({self.construction_ef}) must be at least m ({self.m})"
            )
        return self


class CollectionSpec(_Model):
    """The Chroma collection itself; name, dimension, space, m and constructionEf are immutable."""

    name: str
    dimension: Annotated[int, Field(ge=1, le=65536)]
    # Chroma's default. A resource created while the default was cosine was stored with
    # space: cosine (the API server writes defaults into new objects), so it keeps it.
    space: Space = DEFAULT_SPACE
    hnsw: HnswSpec = Field(default_factory=HnswSpec)

    @field_validator("name")
    @classmethod
    def _chroma_name(cls, v: str) -> str:
        if not COLLECTION_NAME_RE.match(v) or ".." in v:
            raise ValueError(
                f"{v!r} is not a valid Chroma collection name: use 3-512 characters from "
                "[a-zA-Z0-9._-], starting and ending with a letter or digit, no '..'"
            )
        return v


class CredentialsSecretRef(_Model):
    """A Secret in the collection's namespace holding the S3 access key pair."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    access_key_id_key: Annotated[str, Field(min_length=1, max_length=253)] = "AWS_ACCESS_KEY_ID"
    # The name of a key in the Secret, not a secret itself.
    secret_access_key_key: Annotated[str, Field(min_length=1, max_length=253)] = (
        "AWS_SECRET_ACCESS_KEY"  # noqa: S105
    )


class StorageSpec(_Model):
    """Where the collection lives: ``s3://<bucket>/<prefix>/`` at an S3-compatible endpoint."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: Annotated[str, Field(min_length=1, max_length=64)] = "us-east-1"
    credentials_secret_ref: CredentialsSecretRef | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_RE.match(v) or ".." in v:
            raise ValueError(f"{v!r} is not an S3 bucket name (3-63 of [a-z0-9.-])")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if (
            len(v) > 512
            or not PREFIX_RE.match(v)
            or any(part in (".", "..") for part in v.split("/"))
        ):
            raise ValueError(
                f"{v!r} is not a usable key prefix: no leading or trailing '/', no empty, "
                "'.' or '..' segments, only [A-Za-z0-9!_.*'()=-] between slashes"
            )
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not ENDPOINT_RE.match(v):
            raise ValueError(f"{v!r} is not an http(s) URL (e.g. http://minio.minio.svc:9000)")
        return v

    @property
    def bucket_url(self) -> str:
        """The ``s3://bucket/prefix`` URL the pods read (``CHROMASNAP_BUCKET_URL``)."""
        return f"s3://{self.bucket}/{self.prefix}"


class ServiceAccountSpec(_Model):
    """Extra metadata for the generated ServiceAccount (IRSA, EKS Pod Identity, GKE WI…)."""

    annotations: dict[str, str] = Field(default_factory=dict)


class ResourceRequirements(_Model):
    """The usual container ``resources`` (requests and limits by resource name)."""

    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        # The API server only checks this when it creates the pod; report it up front
        # instead of leaving a ReplicaSet event nobody reads.
        for res, req in self.requests.items():
            lim = self.limits.get(res)
            if lim is not None and parse_quantity(req) > parse_quantity(lim):
                raise ValueError(f"requests.{res} ({req}) is greater than limits.{res} ({lim})")
        return self

    def manifest(self) -> dict[str, dict[str, str]]:
        """The ``resources`` stanza of a container, empty maps left out."""
        out: dict[str, dict[str, str]] = {}
        if self.limits:
            out["limits"] = dict(self.limits)
        if self.requests:
            out["requests"] = dict(self.requests)
        return out


class FlushWindow(_Model):
    """A writer's group-commit window: a delta is cut at whichever limit comes first."""

    max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 32 << 20
    max_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 50


class WriterSpec(_Model):
    """The writers' Deployment."""

    replicas: Annotated[int, Field(ge=0, le=100)] = 2
    flush_window: FlushWindow = Field(default_factory=FlushWindow)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)


class CompactorSpec(_Model):
    """The compactor's CronJob."""

    schedule: str = "*/5 * * * *"
    suspend: bool = False
    lease_duration_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    active_deadline_seconds: Annotated[int, Field(ge=60, le=604800)] = 3600
    cache_size: PositiveQuantity | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not CRON_RE.match(v.strip()):
            raise ValueError(
                f"{v!r} is not a cron schedule: five fields (minute hour day month weekday, "
                "e.g. '*/5 * * * *') or a macro such as @hourly"
            )
        return v


class ReaderSpec(_Model):
    """The readers' Deployment (the scale subresource maps to ``replicas``)."""

    replicas: Annotated[int, Field(ge=0, le=100)] = 2
    cache_size: PositiveQuantity = "10Gi"
    poll_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    read_level: ReadLevel = ReadLevel.FRESH
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)


_DURATION_RE = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``30m``, ``12h``, ``7d`` as seconds; ValueError with the accepted forms otherwise."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration: use a whole number and s, m, h or d "
                         "(e.g. 7d, 12h)")
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds > 366 * 86400:
        raise ValueError(f"{text!r} is longer than 366d")
    return seconds


class RetentionSpec(_Model):
    """How many old snapshots to keep, how long folded deltas linger, what to keep for
    point-in-time recovery."""

    snapshots_to_keep: Annotated[int, Field(ge=1, le=1000)] = 3
    delta_grace_period_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 600
    recovery_window: str | None = None

    @field_validator("recovery_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            duration_seconds(v)
        return v

    @property
    def recovery_window_seconds(self) -> int:
        """The window in seconds (0: off)."""
        return duration_seconds(self.recovery_window) if self.recovery_window else 0


class BootstrapSource(StorageSpec):
    """Another collection's storage (validated as storage is) and which state of it."""

    version: Annotated[str, Field(pattern=r"^[0-9]{10}-[0-9a-f]{8}$")] | None = None
    at: datetime | None = None

    @model_validator(mode="after")
    def _one_point(self) -> BootstrapSource:
        if self.version is not None and self.at is not None:
            raise ValueError("give either version or at, not both")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("at needs a time zone (e.g. 2026-12-01T17:30:00Z)")
        return self


class BootstrapSpec(_Model):
    """Start a new collection from another one's data instead of empty (read-only on it)."""

    from_: BootstrapSource = Field(alias="from")


class LocalObjectReference(_Model):
    """A name in the same namespace (used for image pull Secrets)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]


def _secret_key(value: str) -> str:
    if not SECRET_KEY_RE.match(value):
        raise ValueError(f"{value!r} is not a Secret key name (letters, digits, '-', '_', '.')")
    return value


SecretKey = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_secret_key)]


class AuthSecretRef(_Model):
    """The Secret holding a collection's bearer tokens (in the collection's namespace)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]


class AuthSpec(_Model):
    """Bearer-token authentication of the writers and readers.

    The Secret is only referenced: the pods mount the keys they need as files, the
    operator never copies a value. Read and write tokens are separate (a reader
    accepts both, a writer only write tokens, so a read-only client cannot write
    through a reader's forwarding); the push token is shared by the collection's
    writers and readers only, for delta pushes, never by clients.
    """

    secret_ref: AuthSecretRef
    read_tokens_key: SecretKey = "read"
    write_tokens_key: SecretKey = "write"
    push_token_key: SecretKey = "push"  # noqa: S105 - the name of a key, not a token

    @model_validator(mode="after")
    def _distinct_keys(self) -> AuthSpec:
        keys = (self.read_tokens_key, self.write_tokens_key, self.push_token_key)
        if len(set(keys)) != len(keys):
            raise ValueError(
                "readTokensKey, writeTokensKey and pushTokenKey must name three different "
                "keys: a shared key would let read-only clients write, or clients push"
            )
        return self

    def key_names(self) -> tuple[str, str, str]:
        """(read, write, push) key names in the Secret."""
        return (self.read_tokens_key, self.write_tokens_key, self.push_token_key)


class SelectorOperator(StrEnum):
    """Operators of a label selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Model):
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: SelectorOperator
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values and not self.values:
            raise ValueError(f"operator {self.operator.value} needs at least one value")
        if not wants_values and self.values:
            raise ValueError(f"operator {self.operator.value} takes no values")
        return self

    def manifest(self) -> dict[str, Any]:
        """The requirement as the API takes it."""
        out: dict[str, Any] = {"key": self.key, "operator": self.operator.value}
        if self.values:
            out["values"] = list(self.values)
        return out


class LabelSelector(_Model):
    """A Kubernetes label selector; an empty one selects everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """The selector as the API takes it (``{}``: everything)."""
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [e.manifest() for e in self.match_expressions]
        return out


def _cidr(value: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``value`` as a network; like Kubernetes, the prefix length is required."""
    try:
        if "/" not in value:
            raise ValueError("no prefix length")
        return ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise ValueError(f"{what} {value!r} is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)") from e


def _within(
    inner: ipaddress.IPv4Network | ipaddress.IPv6Network,
    outer: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


class IPBlock(_Model):
    """A CIDR range (and exceptions inside it) as a NetworkPolicy peer."""

    cidr: Annotated[str, Field(min_length=1, max_length=64)]
    except_: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, alias="except"
    )

    @model_validator(mode="after")
    def _cidrs(self) -> IPBlock:
        outer = _cidr(self.cidr, "cidr")
        for ex in self.except_:
            inner = _cidr(ex, "except")
            if not _within(inner, outer):
                raise ValueError(f"except {ex!r} is not inside cidr {self.cidr!r}")
        return self

    def manifest(self) -> dict[str, Any]:
        """The block as the API takes it."""
        out: dict[str, Any] = {"cidr": self.cidr}
        if self.except_:
            out["except"] = list(self.except_)
        return out


class NetworkPolicyPeer(_Model):
    """Kubernetes' NetworkPolicyPeer: pods (by label, in namespaces by label) or an IP block.

    As in Kubernetes: ``podSelector`` alone means pods of the collection's namespace;
    with ``namespaceSelector``, pods of the selected namespaces; ``namespaceSelector``
    alone, every pod there; ``ipBlock`` stands alone.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selectors:
            raise ValueError("ipBlock cannot be combined with podSelector or namespaceSelector")
        if self.ip_block is None and not selectors:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        return self

    def manifest(self) -> dict[str, Any]:
        """The peer as the API takes it."""
        out: dict[str, Any] = {}
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.manifest()
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.manifest()
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.manifest()
        return out


class NetworkPolicySpec(_Model):
    """Which clients may reach the collection's pods (rendered as NetworkPolicies)."""

    enabled: bool = False
    ingress_from: list[NetworkPolicyPeer] = Field(default_factory=list)
    metrics_from: list[NetworkPolicyPeer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _lists_need_enabled(self) -> NetworkPolicySpec:
        if not self.enabled and (self.ingress_from or self.metrics_from):
            raise ValueError(
                "ingressFrom and metricsFrom take effect only with enabled: true; set it, "
                "or remove the lists"
            )
        return self


class ChromaCollectionSpec(_Model):
    """``spec`` of a ChromaCollection."""

    collection: CollectionSpec
    storage: StorageSpec
    #: Set: a collection of that ChromaDatabase's pool, read as ``database.DeclaredSpec``
    #: instead (the CRD then has no storage); here it is always unset.
    database: None = None
    service_account: ServiceAccountSpec = Field(default_factory=ServiceAccountSpec)
    writer: WriterSpec = Field(default_factory=WriterSpec)
    compactor: CompactorSpec = Field(default_factory=CompactorSpec)
    reader: ReaderSpec = Field(default_factory=ReaderSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    image: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    image_pull_policy: PullPolicy | None = None
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    auth: AuthSpec | None = None
    network_policy: NetworkPolicySpec | None = None
    bootstrap: BootstrapSpec | None = None

    @model_validator(mode="after")
    def _bootstrap_elsewhere(self) -> ChromaCollectionSpec:
        src = self.bootstrap.from_ if self.bootstrap else None
        if src is not None and src.bucket == self.storage.bucket and (
            src.prefix == self.storage.prefix
            or src.prefix.startswith(self.storage.prefix + "/")
            or self.storage.prefix.startswith(src.prefix + "/")
        ):
            raise ValueError(
                f"bootstrap.from (s3://{src.bucket}/{src.prefix}) overlaps this collection's "
                f"storage (s3://{self.storage.bucket}/{self.storage.prefix}): give the new "
                "collection its own prefix"
            )
        return self

    @model_validator(mode="after")
    def _grace_covers_poll(self) -> ChromaCollectionSpec:
        # A fresh reader still on the previous snapshot reads the deltas that were just
        # folded until its next poll; deleting them sooner would hide acknowledged writes.
        if (
            self.reader.read_level is ReadLevel.FRESH
            and self.retention.delta_grace_period_seconds < self.reader.poll_interval_seconds
        ):
            raise ValueError(
                "retention.deltaGracePeriodSeconds "
                f"({self.retention.delta_grace_period_seconds}) must be at least "
                f"reader.pollIntervalSeconds ({self.reader.poll_interval_seconds}) "
                "when reader.readLevel is fresh"
            )
        return self


def _loc(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location in the CR's own camelCase terms."""
    parts: list[str] = ["spec"]
    for p in loc:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        else:
            parts.append(p)
    return ".".join(parts)


def explain(err: ValidationError) -> str:
    """One line per problem, each naming the field as the user wrote it."""
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{_loc(tuple(e['loc']))}: {msg}")
    return "; ".join(lines)


def parse_spec(body: Mapping[str, Any]) -> ChromaCollectionSpec:
    """Validate the ``spec`` of a ChromaCollection object (a kopf body or plain dict).

    Raises :class:`SpecError` whose message names every offending field, e.g.
    ``spec.reader.cacheSize: '0' must be greater than zero``.
    """
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec: missing or not an object")
    try:
        # by_alias: the wire format is camelCase; the API server's defaults may be
        # absent (e.g. in unit tests or when the CRD is older), the models fill them.
        return ChromaCollectionSpec.model_validate(dict(spec), by_alias=True)
    except ValidationError as e:
        raise SpecError(explain(e)) from e


@dataclass(frozen=True)
class ChromaCollection:
    """What the spec builders need of one ChromaCollection: identity and parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: ChromaCollectionSpec
    generation: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChromaCollection:
        """Build from a kopf ``body`` (or any dict shaped like the API object)."""
        who = Identity.of(body, "it prefixes Service and CronJob names")
        return cls(name=who.name, namespace=who.namespace, uid=who.uid, spec=parse_spec(body),
                   generation=who.generation)


@dataclass(frozen=True)
class Identity:
    """Who a resource is: what every resource's ``from_body`` reads of its metadata."""

    name: str
    namespace: str
    uid: str
    generation: int | None

    @classmethod
    def of(cls, body: Mapping[str, Any], why: str) -> Identity:
        """The metadata of ``body``; :class:`SpecError` for a name its children cannot
        carry (``why`` says what the name is used for)."""
        meta = body.get("metadata")
        if not isinstance(meta, Mapping):
            raise SpecError("metadata: missing")
        name = str(meta.get("name") or "")
        if len(name) > MAX_NAME_LENGTH or not RESOURCE_NAME_RE.match(name):
            raise SpecError(
                f"metadata.name: {name!r} must be at most {MAX_NAME_LENGTH} characters of "
                f"[a-z0-9-], starting with a letter ({why})"
            )
        gen = meta.get("generation")
        return cls(name=name, namespace=str(meta.get("namespace") or ""),
                   uid=str(meta.get("uid") or ""), generation=int(gen) if gen is not None else None)
