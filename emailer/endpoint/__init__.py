"""The endpoint: the message pipeline, the outbox relay, the scheduler and the worker process."""
