"""Plugin-to-plugin tokens: the handler, signing keys and where they come from."""
