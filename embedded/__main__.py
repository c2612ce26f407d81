import sys

from embedded.cli import main

sys.exit(main())
