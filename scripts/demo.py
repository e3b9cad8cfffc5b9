"""`qkdiov demo` as a script (Brownie-style): `python scripts/demo.py [options]`."""

import sys

from vehicles.cli import main

if __name__ == "__main__":
    main(["demo", *sys.argv[1:]])
