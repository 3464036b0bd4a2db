"""Provider webhooks: one module per provider turns its callbacks into provider-neutral reports."""
