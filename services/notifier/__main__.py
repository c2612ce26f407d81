import sys

from services.notifier.server import main

sys.exit(main())
