"""The ``chromasnap`` command line: commands, runtime wiring of each role,
``status``, ``import``/``export``, and the local ``dev`` and ``demo`` stacks."""
