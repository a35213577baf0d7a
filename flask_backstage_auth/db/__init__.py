"""Persistence: the tables, the database key store, the Alembic branch and
``flask backstage-auth db``. Imported only when a database is used."""
