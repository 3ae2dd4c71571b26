"""Embeddings for the demo: a small hashing embedder, or a real model if installed.

``HashingEmbedding`` is NOT a language model: it hashes words and character
trigrams into a fixed-size vector (the "hashing trick"). Texts that share
words land close together, which is enough to show sensible neighbours
offline with no download. For real semantic search, compute embeddings with
any model (e.g. chromadb's ``SentenceTransformerEmbeddingFunction``) and pass
them to the client as usual: chromasnap stores vectors, it never computes them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {"a", "an", "the", "of", "to", "in", "on", "and", "or", "for", "with", "by", "is", "are",
     "was", "were", "be", "it", "its", "as", "at", "from", "that", "this", "which", "into",
     "than", "then", "also", "can"}
)


class HashingEmbedding:
    """Deterministic bag-of-words + trigram hashing into ``dimension`` floats (L2-normalised)."""

    name = "hashing (demo only, not a language model)"

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension

    def _slot(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h % self.dimension, 1.0 if (h >> 63) & 1 else -1.0

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed each text; the result has one row per text."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
            for w in words:
                slot, sign = self._slot("w:" + w)
                out[i, slot] += 2.0 * sign
                padded = f"#{w}#"
                for j in range(len(padded) - 2):
                    slot, sign = self._slot("t:" + padded[j : j + 3])
                    out[i, slot] += 0.5 * sign
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] /= norm
        return out
