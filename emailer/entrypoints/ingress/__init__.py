"""The webhook ingress: provider callbacks in over HTTP, verified, onto the bus as RecordDeliveryReports.

It holds no database connection: ``emailer ingress`` runs it alone (scales on
its own), ``emailer run`` mounts it beside the gateway.
"""
