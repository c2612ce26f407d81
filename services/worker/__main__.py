import sys

from services.worker.server import main

sys.exit(main())
