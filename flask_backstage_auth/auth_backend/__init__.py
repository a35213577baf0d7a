"""The ``auth`` plugin: user tokens for development, with the guest provider."""
