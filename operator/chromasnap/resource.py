"""The ``ChromaCollection`` resource's identity and the values pods report in its status.

The operator and the data plane meet only here and in the settings
(:mod:`chromasnap.config`): the compactor and purge runs patch the status of the
resource these names address, with the results listed here; the operator reads them.
"""

GROUP = "chromasnap.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ChromaCollection"
PLURAL = "chromacollections"

#: A new value asks for a compaction now: on a ChromaCollection the operator starts a
#: Job; on a ChromaDatabase its pods run a pass and answer in ``status.lastPass.request``.
COMPACT_NOW_ANNOTATION = f"{GROUP}/compact-now"

#: Values of ``status.lastCompaction.result`` (an enum in the CRD, so keep them in step):
#: the compactor's ``succeeded | skipped | failed`` in Kubernetes' CamelCase; the detail
#: (NothingToDo, LockHeld, Fenced, StorageError, ...) goes in ``reason``.
COMPACTION_RESULTS = ("Succeeded", "Skipped", "Failed")

#: The ``ChromaDatabase`` resource: a pool of collections behind one endpoint. Its pods
#: patch the pool's totals into its status after each compaction pass.
DATABASE_KIND = "ChromaDatabase"
DATABASE_PLURAL = "chromadatabases"
#: On a ChromaCollection declared in a pool (``spec.database``) with ``deletionPolicy:
#: Delete``: added by the operator, removed by the pool's pods once they deleted it.
POOL_DELETE_FINALIZER = "chromasnap.dev/pool-delete"
