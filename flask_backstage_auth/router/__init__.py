"""What a request meets first (Backstage's ``httpRouter``): the credentials
barrier, auth policies and the paths and mounts they match, and the
per-plugin ``/.backstage/auth/v1/`` endpoints."""
