"""What a request meets first (Backstage's ``httpRouter``): the credentials
barrier, auth policies and the paths and mounts they match, the per-plugin
``/.backstage/auth/v1/`` and ``/.well-known/backstage/permissions/``
endpoints, the bounds on request bodies, and the app's errors as JSON."""
