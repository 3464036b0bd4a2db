"""A SendGrid-compatible API server: a stand-in for SendGrid's v3 Mail Send for local runs, tests
and benchmarks (``emailer sandbox``).

It sits beside Emailer's layers rather than in ``adapters/`` or ``entrypoints/``
because it is a separate application, not a part of Emailer: it plays the
provider Emailer's SendGrid adapter talks to over HTTP. It imports nothing from
the rest of Emailer (only ``emailer.sandbox.*``, so it could move to a package
of its own), and Emailer imports it only to start it (the CLI) and in tests.
``tests/unit/test_sandbox_stands_alone.py`` keeps that true.
"""
