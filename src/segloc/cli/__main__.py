import sys

from segloc.cli import main

sys.exit(main())
