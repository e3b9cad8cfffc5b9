"""`qkdiov console` as a script (Brownie-style): `python scripts/console.py [options]`."""

import sys

from vehicles.cli import main

if __name__ == "__main__":
    main(["console", *sys.argv[1:]])
