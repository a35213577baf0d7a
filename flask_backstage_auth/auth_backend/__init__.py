"""The ``auth`` plugin: user tokens, with the guest provider, and ``/v1/userinfo``."""
