"""Emailer: the Email domain and the adapters that connect it to RabbitMQ, SQL, blobs and providers."""

__version__ = "0.1.0"
