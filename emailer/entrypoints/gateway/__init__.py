"""The HTTP ingress: the command API, the query side, health; provider webhooks come next."""
