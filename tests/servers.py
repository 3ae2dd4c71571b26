"""Real ``chromasnap writer`` / ``reader`` processes for tests (see chromasnap.localstack)."""

from chromasnap.localstack import LocalStack as Stack
from chromasnap.localstack import Proc
from chromasnap.localstack import collection_env as stack_env

__all__ = ["Proc", "Stack", "stack_env"]
