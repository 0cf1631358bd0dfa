import sys

from infership.cli import main

sys.exit(main())
