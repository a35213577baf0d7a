"""Test helpers: mock credentials and the pytest plugin."""
