"""Sphinx configuration for the flask-backstage-auth documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (or ``tox -e docs``).
Only Sphinx and its bundled autodoc extension are needed; nothing is fetched
from the network.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

# Document the checkout this file belongs to, installed or not.
sys.path.insert(0, os.path.abspath(".."))

project = "flask-backstage-auth"
author = "The flask-backstage-auth developers"
copyright = "The flask-backstage-auth developers"

try:
    release = metadata.version("flask-backstage-auth")
except metadata.PackageNotFoundError:  # pragma: no cover - not installed
    release = "0.1.0.dev0"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {
    "show-inheritance": True,
}

nitpicky = False
exclude_patterns = ["_build"]
templates_path: list[str] = []

language = "en"
pygments_style = "sphinx"

html_theme = "alabaster"
html_theme_options = {
    "description": "Backstage-compatible backend auth for Flask",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
