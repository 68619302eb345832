"""The ``deltaport`` command: one module per command group, thin over the library."""
