"""Adapters: the ports of ``handlers`` implemented on kombu, SQLAlchemy, the blob stores and the providers."""
