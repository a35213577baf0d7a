"""The example backend's plugins: one blueprint each, under ``/api/<plugin id>``."""
