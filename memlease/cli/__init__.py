"""The ``memlease`` command."""
