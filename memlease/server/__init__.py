"""The server: trio shells (listeners, connections, socket I/O, expiry, signals) around the
sans-IO connection core and the lease service."""
