"""How the operator itself is configured: ``CHROMASNAP_*`` env set by the Helm chart.

Two groups, because they reach different places: :class:`OperatorSettings` shapes the
children (image, cluster domain) and so is passed to the pure builders;
:class:`RuntimeSettings` only tunes the operator process (resync, watches, concurrency).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chromasnap import __version__
from chromasnap.config import ENV_PREFIX
from chromasnap.operator.crd import PullPolicy


class OperatorSettings(BaseSettings):
    """What the operator itself is told (by the Helm chart, through ``CHROMASNAP_*`` env)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    default_image: str = Field(
        default=f"chromasnap:{__version__}",
        description="image of the workloads when a ChromaCollection sets no spec.image",
    )
    default_image_pull_policy: PullPolicy | None = None
    cluster_domain: str | None = Field(
        default=None,
        description="e.g. cluster.local; unset: in-cluster names end in .svc and resolve "
        "through the pods' DNS search path",
    )
    log_level: str = "INFO"


class RuntimeSettings(BaseSettings):
    """How the operator itself runs (``CHROMASNAP_*`` env; the chart leaves the defaults)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    resync_seconds: float = Field(
        default=600.0, ge=0,
        description="re-apply every collection's and database's children this often, in "
                    "case a watch event was missed (0: never)",
    )
    watch_timeout_seconds: int = Field(
        default=300, ge=10,
        description="server-side timeout of each watch request; watches are then re-opened",
    )
    log_format: str = Field(default="json", pattern="^(json|text)$")
    max_concurrent_reconciles: int = Field(
        default=8, ge=1, le=256,
        description="collections applied at the same time; bounds the operator's memory "
                    "when many change at once (e.g. on startup), not the latency of one",
    )
