"""Wire-format building blocks shared by the built-in protocols (no plugin of its own)."""
