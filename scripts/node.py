"""`qkdiov node` as a script (Brownie-style): `python scripts/node.py [options]`."""

import sys

from vehicles.cli import main

if __name__ == "__main__":
    main(["node", *sys.argv[1:]])
