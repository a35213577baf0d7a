"""``backend.auth.externalAccess``: the entries in config order, their
access restrictions, and the ``static`` and ``jwks`` handler types."""
