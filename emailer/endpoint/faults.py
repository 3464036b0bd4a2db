"""Named crash points, for tests that must kill a process at an exact step (not by timing).

``EMAILER_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches
that point. Unset (always, in production), ``crash_point`` does nothing.
"""

from __future__ import annotations

import os
import signal

AFTER_COMMIT_BEFORE_PUBLISH = "after_commit_before_publish"
AFTER_PROVIDER_CALL_BEFORE_COMMIT = "after_provider_call_before_commit"
"""In DispatchEmail: the provider answered (perhaps accepted) and the outcome is not recorded yet."""


def crash_point(name: str, armed: str | None) -> None:
    if armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
