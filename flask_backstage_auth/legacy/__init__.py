"""Backstage's old backend system: the service-to-service token manager,
its HS256 tokens and secrets, the require-authentication middleware with
``unless`` exemptions, and adapters between the old and new services."""
