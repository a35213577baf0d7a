"""Backstage user tokens and their limited form."""
