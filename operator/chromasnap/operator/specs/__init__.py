"""Pure builders: one ChromaCollection in, the Kubernetes objects it needs out.

Nothing here talks to the API server. Every function returns plain dicts (the
JSON the API takes), complete enough for server-side apply: ``apiVersion``,
``kind``, ``metadata.name``/``namespace``, labels and a controller owner
reference to the ChromaCollection, so that deleting the collection garbage-
collects its workloads.

One module per idea:

- :mod:`.naming`: child names, labels, owner reference (what every child shares);
- :mod:`.environment`: the ConfigMap and per-component env (the contract of ``config.py``);
- :mod:`.pods`: containers and pod templates (security, probes, volumes);
- :mod:`.access`: ServiceAccount, Role, RoleBinding and the Lease the Role grants;
- :mod:`.auth`: the token files of ``spec.auth`` (Secret volume, mounts, env);
- :mod:`.network`: Services, PodDisruptionBudgets and ``spec.networkPolicy``'s NetworkPolicies;
- :mod:`.deployments`: the writers and readers;
- :mod:`.jobs`: the compactor CronJob, on-demand compaction Jobs, the purge Job;
- :mod:`.children`: all of a collection's children, in apply order.
"""
