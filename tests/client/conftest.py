"""The client package's tests import ``emailer_client`` from ``clients/python/src``.

Appended (not prepended) to ``sys.path``: ``contracts`` keeps resolving to the
repository's package, which the client's ``src/contracts`` symlink points at.
"""

from __future__ import annotations

import sys
from pathlib import Path

CLIENT_SRC = Path(__file__).resolve().parents[2] / "clients" / "python" / "src"
if str(CLIENT_SRC) not in sys.path:
    sys.path.append(str(CLIENT_SRC))
