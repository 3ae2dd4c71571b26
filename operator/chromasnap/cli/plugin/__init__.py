"""``kubectl chromasnap``: day-2 operations on ChromaCollections and ChromaDatabases
from a workstation.

A kubectl plugin (the ``kubectl-chromasnap`` executable the package installs): kubectl
finds it on ``PATH`` and runs it for ``kubectl chromasnap ...``. It talks to the API
server with the ``kubernetes`` client and the usual kubeconfig, ``--context`` and
``--namespace``; bucket work (export, the bucket summary) runs the ``chromasnap``
command line with the resource's own storage settings and credentials Secret.

- :mod:`.kube`: connection, REST calls as plain JSON, errors that say what to do.
- :mod:`.status`: ``status`` (conditions, snapshot, readers' loaded versions, runs).
- :mod:`.compact`: ``compact`` (the compact-now annotation, then the run followed).
- :mod:`.bucket`: ``export``, ``restore`` and the bucket summary.
- :mod:`.pool`: a ChromaDatabase: ``status``, ``collections`` (``chromasnap
  pool-collections`` in a child process), ``export`` and ``restore`` of one of its
  collections, and the bucket summary of its support bundle.
- :mod:`.logs`: ``logs`` of a collection's or a database's pods (by the operator's
  labels).
- :mod:`.report`: ``report`` (a support bundle of a collection or a database, without
  secret values).
- :mod:`.main`: the argument parser and entry point.
"""
