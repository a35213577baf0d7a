"""``backend.auth.externalAccess``: the entries in config order, their
access restrictions, and the ``static``, ``legacy`` and ``jwks`` handler types."""
