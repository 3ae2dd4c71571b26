"""Real ``chromasnap writer`` / ``reader`` processes for tests (see chromasnap.localstack)."""

from chromasnap.cli.localstack import LocalStack as Stack
from chromasnap.cli.localstack import Proc
from chromasnap.cli.localstack import collection_env as stack_env

__all__ = ["Proc", "Stack", "stack_env"]
