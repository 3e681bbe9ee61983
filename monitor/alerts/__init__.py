"""Outbound adapters: the durable alert outbox and the Redis publisher that drains it."""
