"""The controller: kopf handlers and the stateful parts they call.

Everything here that talks to the API server or remembers something lives in
one small class per job; the decisions themselves are pure functions outside
this package (:mod:`chromasnap.operator.specs`, :mod:`chromasnap.operator.conditions`,
:mod:`chromasnap.operator.checks`, :mod:`chromasnap.operator.drift`).

- :mod:`.handlers`: kopf registration (thin) and :func:`~.handlers.run_operator`;
- :mod:`.wiring`: builds the parts at startup, stops them at shutdown;
- :mod:`.cache`: the collections and children kopf's watches keep in memory;
- :mod:`.memory`: what the operator decided per collection, and per-collection locks;
- :mod:`.reconcile`: apply a collection's children;
- :mod:`.statuswriter`: patch the status and post Events when it changes;
- :mod:`.repair`: restore children that were deleted or edited by hand;
- :mod:`.compactions`: start on-demand and bootstrap compaction Jobs;
- :mod:`.purge`: ``deletionPolicy: Delete``;
- :mod:`.metrics`: ``/metrics``, per-collection series from the status (pure part in
  :mod:`chromasnap.operator.statusmetrics`);
- :mod:`.resync`: the periodic re-apply of every collection and database;
- :mod:`.events`: core/v1 Events; :mod:`.retry`: retry delays.
"""
