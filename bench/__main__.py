import sys

from bench.headless import main

sys.exit(main())
