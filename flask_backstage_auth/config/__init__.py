"""Backstage's configuration (``app-config.yaml``) and the ``BACKSTAGE_AUTH_*`` settings."""
