"""Contract tests: one suite per port, run against every adapter of that port (and the fake of it).

A suite is written once against the port (``handlers.ports``); its fixture is
parametrized over the adapters, so a new adapter joins by adding one line to
that list and must then pass everything the others pass. Adapters that need a
server carry that server's marker (``s3``, ``postgres``, ``rabbitmq``).
"""
