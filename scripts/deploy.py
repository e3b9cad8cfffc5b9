"""`qkdiov deploy` as a script (Brownie-style): `python scripts/deploy.py [options]`."""

import sys

from vehicles.cli import main

if __name__ == "__main__":
    main(["deploy", *sys.argv[1:]])
