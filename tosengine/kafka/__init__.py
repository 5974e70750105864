"""tosengine worker: Kafka consumer-group workers with exactly-once audit (docs/scale-out.md)."""
