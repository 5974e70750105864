"""Runtime stages: match (matcher, evaluate), decide (engine, rules, clock), and the reference evaluator."""
