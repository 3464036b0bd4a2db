"""Named fault points, for tests that must fail or kill a process at an exact step (not by timing).

``EMAILER_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches
that point. ``EMAILER_FAIL_HANDLING=<MessageType>`` makes every attempt to
handle a message of that type raise ``InjectedFailure`` (a handler that always
fails, to watch recoverability at work). Unset (always, in production), both
do nothing.
"""

from __future__ import annotations

import os
import signal

AFTER_COMMIT_BEFORE_PUBLISH = "after_commit_before_publish"
AFTER_PROVIDER_CALL_BEFORE_COMMIT = "after_provider_call_before_commit"
"""In DispatchEmail: the provider answered (perhaps accepted) and the outcome is not recorded yet."""


class InjectedFailure(Exception):
    """Raised instead of running a handler, when EMAILER_FAIL_HANDLING names its message type."""


def crash_point(name: str, armed: str | None) -> None:
    if armed == name:
        os.kill(os.getpid(), signal.SIGKILL)


def failure_point(message_type: str, armed: str | None) -> None:
    if armed and armed == message_type:
        raise InjectedFailure(f"injected failure for every {message_type} (EMAILER_FAIL_HANDLING)")
