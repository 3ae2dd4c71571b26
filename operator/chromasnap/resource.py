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

#: Values of ``status.lastCompaction.result`` (an enum in the CRD, so keep them in step):
#: the compactor's ``succeeded | skipped | failed`` in Kubernetes' CamelCase; the detail
#: (NothingToDo, LockHeld, Fenced, StorageError, ...) goes in ``reason``.
COMPACTION_RESULTS = ("Succeeded", "Skipped", "Failed")
