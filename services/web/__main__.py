"""`python -m services.web --data-dir D --port 0` runs the web service."""

import sys

from services.notls import import_without_openssl

# aiohttp and the service without OpenSSL; its catalog's task modules with (services.notls).
sys.exit(import_without_openssl("services.web.server").main())
