"""The states an email and each of its recipients can be in."""

from enum import StrEnum


class EmailStatus(StrEnum):
    QUEUED = "queued"
    DISPATCHING = "dispatching"
    ACCEPTED = "accepted"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RecipientStatus(StrEnum):
    PENDING = "pending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"


FINAL = (RecipientStatus.DELIVERED, RecipientStatus.FAILED)
