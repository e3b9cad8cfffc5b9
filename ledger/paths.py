"""Where the project's files live: sources, node_modules, caches and deployment records.

The package is used from a checkout (``pip install -e .``), so the project root is the
parent of this package. ``QKDIOV_HOME`` moves the *workspace* (deployments, caches, the
embedded chain's journal) elsewhere, which the tests use to stay isolated.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
NODE_MODULES = PROJECT_ROOT / "node_modules"
SOLC_SHIM = Path(__file__).resolve().parent / "solc_shim.js"


def workspace() -> Path:
    """Directory for deployments/, build/ and .qkdiov/ (``QKDIOV_HOME`` or the project root)."""
    return Path(os.environ.get("QKDIOV_HOME", PROJECT_ROOT)).resolve()


def deployments_dir() -> Path:
    return workspace() / "deployments"


def build_dir() -> Path:
    return PROJECT_ROOT / "build"


def state_dir() -> Path:
    return workspace() / ".qkdiov"


def node_binary(name: str) -> Path:
    """A binary that an npm package installed under node_modules/.bin."""
    return NODE_MODULES / ".bin" / name
