"""`python -m migrate` runs the same CLI as the `paas-migrate` console script."""

import sys

from migrate.cli import main

if __name__ == "__main__":
    sys.exit(main())
