"""How long to wait before kopf retries a handler that hit transient trouble."""

from __future__ import annotations


def backoff(retry: int, cap: float = 60.0) -> float:
    """Retry delay for transient trouble: 2, 4, 8 … seconds, at most ``cap``."""
    return float(min(cap, 2 ** min(retry + 1, 10)))
