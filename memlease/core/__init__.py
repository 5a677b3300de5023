"""The lease rules, sans-IO: the arena, the lease table, the messages, the service and the
errors. Imports neither trio nor pluggy."""
