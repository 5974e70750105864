"""Benchmarks: tosengine against raw durable_rules on the same compiled rulesets, in one run."""
