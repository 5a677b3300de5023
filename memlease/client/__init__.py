"""The clients: the method set (sans-IO), the trio client and the blocking client."""
