"""Token verification, one module per token kind."""
