"""`python -m services.web --data-dir D --port 0` runs the web service."""

import sys

from services.web.server import main

sys.exit(main())
