"""``python -m example_app``: the example backend on backend.listen (127.0.0.1:7007).

Development or production as the configuration says (``example.development``:
true in ``app-config.yaml``, false once ``app-config.production.yaml`` is
layered over it): production has no guest sign-in, no generated keys and no
development admin.
"""

from __future__ import annotations

import logging

from example_app import create_app
from flask_backstage_auth.config import ConfigReader


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app()
    listen = ConfigReader(app.config["BACKSTAGE_CONFIG"]).get_config("backend.listen")
    host = listen.get_string("host", "127.0.0.1")
    port = int(listen.get("port", 7007))
    # threaded: the search indexer calls the catalog in this same process.
    app.run(host=host, port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
