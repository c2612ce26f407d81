import sys

from embedded.entry import main

sys.exit(main())
