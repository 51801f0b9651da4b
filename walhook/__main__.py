import sys

from walhook.cli import main

sys.exit(main())
