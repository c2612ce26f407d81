"""`python -m services.notifier --data-dir D [--port P] [--web-port W]` runs the notifier."""

import sys

from services.notls import hide_openssl, wants_tls

if not wants_tls(sys.argv[1:]):
    hide_openssl()  # before anything imports asyncio: it runs no code but ours (services.notls)

from services.notifier.server import main  # noqa: E402

sys.exit(main())
