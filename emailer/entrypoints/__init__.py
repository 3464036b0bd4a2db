"""Entry points: the CLI, the worker process, the HTTP gateway and the all-in-one runner."""
