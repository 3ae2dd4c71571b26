"""The Kubernetes operator: the CRD model, pure spec builders and status logic,
a small Kubernetes client, and the kopf handlers that call them.

Meets the data plane only through settings (the environment pods get) and the
status report (:mod:`chromasnap.resource`).
"""
