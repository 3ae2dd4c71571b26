"""Bytes in the bucket: the object-store contract and its S3 and local backends,
the pointer, manifests, delta files and verified snapshot transfers.

Uses :mod:`chromasnap.engine` only for the record types that deltas carry; imports no role.
"""
