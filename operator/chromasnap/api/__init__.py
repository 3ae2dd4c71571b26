"""Chroma's v2 HTTP API for one collection, shared by the writer and reader servers.

``app`` (the ASGI app) dispatches through ``routing`` to the handlers in
``system_routes``, ``collection_routes``, ``read_routes`` and ``write_routes``,
which share a ``service.ServiceContext``. Requests are decoded by ``parsing``
into ``models`` for the ``backends``; answers are shaped by ``responses``,
failures by ``error_responses``. ``auth``, ``tokens`` (read-your-writes),
``forwarding``, ``asgi`` plumbing, ``http_metrics`` and ``server`` (uvicorn)
do one job each.
"""
