"""`python -m services.web --data-dir D --port 0` runs the web service."""

import importlib
import sys

from services.notls import import_without_openssl, wants_tls

# aiohttp and the service without OpenSSL; its catalog's task modules with (services.notls).
# Serving TLS (`--tls-cert`) needs it, of course.
if wants_tls(sys.argv[1:]):
    sys.exit(importlib.import_module("services.web.server").main())
sys.exit(import_without_openssl("services.web.server").main())
