"""Policy stages: load -> parse -> check -> compile. Nothing here touches durable_rules or SQL."""
