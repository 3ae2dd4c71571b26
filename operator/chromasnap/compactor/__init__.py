"""The compactor role: the fenced fold of pending deltas into a new snapshot
version, its lock (local or a Kubernetes Lease), and its report into the
collection's status."""
