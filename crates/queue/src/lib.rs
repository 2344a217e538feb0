//! The shard queue: a small trait with RabbitMQ and in-memory implementations.
