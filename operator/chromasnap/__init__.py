"""chromasnap: Chroma on Kubernetes as snapshot replicas."""

__version__ = "0.1.0"
