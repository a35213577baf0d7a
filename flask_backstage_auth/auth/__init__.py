"""The ``auth`` service (Backstage's ``auth``), free of Flask: the per-plugin
service, the verifier that dispatches each token to its kind, and one
folder per token kind: ``plugin``, ``user`` and ``external``."""
