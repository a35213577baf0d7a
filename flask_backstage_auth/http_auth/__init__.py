"""The ``http_auth`` service (Backstage's ``httpAuth``): a request's
credentials from its bearer token or user cookie, and the cookie itself."""
