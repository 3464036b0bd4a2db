"""The endpoint runtime (the service layer's message bus).

Decode a delivery, route it, run its handler in a unit of work, ack after the
commit, schedule due emails. It depends on ``handlers`` and the domain only.
"""
