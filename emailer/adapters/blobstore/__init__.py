"""Blob store adapters: content-addressed bytes (attachments) kept apart from messages and rows."""
