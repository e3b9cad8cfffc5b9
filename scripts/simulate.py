"""`qkdiov simulate` as a script (Brownie-style): `python scripts/simulate.py [options]`."""

import sys

from vehicles.cli import main

if __name__ == "__main__":
    main(["simulate", *sys.argv[1:]])
