"""Everything about RabbitMQ: connections, topology, the confirming publisher, the consumer
base, retry tiers and the worker.  Never imports Flask or the store."""
