import sys

from reloader.cli import main

sys.exit(main())
