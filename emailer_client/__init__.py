"""Client-side helpers for services that send email through Emailer.

Needs only ``contracts`` (pydantic) and, for the claim check, the ``minio``
client: nothing of Emailer's own dependencies (no SQLAlchemy, kombu, FastAPI).
"""
