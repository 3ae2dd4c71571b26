"""The Kubernetes operator: the CRD model, pure spec builders and status logic,
a small Kubernetes client, and the kopf handlers that call them.

Layout (API types, pure decisions, builders, controller):

- :mod:`.crd`: the ChromaCollection API type (schema model, parsing);
- :mod:`.settings`: how the operator itself is configured;
- :mod:`.kubeapi`: the small asyncio Kubernetes client;
- pure logic, no API calls: :mod:`.observed` (what the cluster reports),
  :mod:`.checks` (what the schema cannot check), :mod:`.schedule` (cron lines,
  on-demand runs), :mod:`.conditions` (status and Events), :mod:`.drift`;
- :mod:`.specs`: pure builders, one ChromaCollection in, manifests out;
- :mod:`.controller`: kopf handlers and the stateful parts they call.

Meets the data plane only through settings (the environment pods get) and the
status report (:mod:`chromasnap.resource`).
"""
