"""tosengine worker: Kafka consumer-group workers with exactly-once audit (docs/scale-out.md).

Where each thing happens:

* topology.py  policies -> stages (key group x stratum), their topics, and how items are routed
* router.py    an input record -> repartition records (CloudEvents binding, validation, watermark)
* records.py   the repartition records' wire format
* partition.py a stage partition's records -> processed in position order (runtime/order.py), watermarks
* stage.py     a stage's rules on one partition; ladder.py the escalation ladder on one partition
* offsets.py   each partition's next offset and owner epoch; writer.py the one transaction per write
* worker.py    the consumer loop and rebalances; clients.py the Kafka clients; topics.py the topics
* metrics.py   the worker's Prometheus metrics
"""
