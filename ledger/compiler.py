"""Offline compilation of contracts/ with solc-js through py-solc-x.

The native solc download is not reachable here, so py-solc-x is pointed at a small node
shim over the npm ``solc`` package. Artifacts are cached under build/contracts/ by a hash
of the sources, the compiler version and the settings: commands compile once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CompilationError
from .paths import CONTRACTS_DIR, NODE_MODULES, SOLC_SHIM, build_dir

EVM_VERSION = "cancun"  # runs on eth-tester (py-evm), anvil and Hardhat alike
OPTIMIZER_RUNS = 200


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str

    @property
    def abi_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.abi, sort_keys=True).encode()).hexdigest()


def _package_version(package: str) -> str:
    manifest = NODE_MODULES / package / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError) as exc:
        raise CompilationError(
            f"npm package {package} is missing from {NODE_MODULES}: run `npm ci` (or `make setup`)"
        ) from exc


def standard_input(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Any]:
    sources = {
        f"contracts/{path.name}": {"content": path.read_text()}
        for path in sorted(contracts_dir.glob("*.sol"))
    }
    if not sources:
        raise CompilationError(f"no Solidity sources in {contracts_dir}")
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }


def _cache_key(compiler_input: dict[str, Any]) -> str:
    versions = {p: _package_version(p) for p in ("solc", "@openzeppelin/contracts")}
    blob = json.dumps({"input": compiler_input, "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_solc(compiler_input: dict[str, Any]) -> dict[str, Any]:
    import solcx
    from solcx.exceptions import SolcError

    if shutil.which("node") is None:
        raise CompilationError("node is not on PATH: install Node.js 20 to compile the contracts")
    try:
        output = solcx.compile_standard(compiler_input, solc_binary=SOLC_SHIM, allow_empty=True)
    except SolcError as exc:
        raise CompilationError(f"solc failed: {str(exc).splitlines()[0]}") from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilationError("solc: " + errors[0].get("formattedMessage", errors[0]["message"]).strip())
    return output


def compile_contracts(force: bool = False) -> dict[str, Artifact]:
    """Compile contracts/*.sol (or load the cached result) and return artifacts by name."""
    compiler_input = standard_input()
    cache_file = build_dir() / "contracts" / f"{_cache_key(compiler_input)}.json"
    if cache_file.exists() and not force:
        raw = json.loads(cache_file.read_text())
    else:
        output = _run_solc(compiler_input)
        raw = {
            name: {"abi": data["abi"], "bytecode": "0x" + data["evm"]["bytecode"]["object"]}
            for source, contracts in output["contracts"].items()
            if source.startswith("contracts/")
            for name, data in contracts.items()
        }
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw))
        tmp.replace(cache_file)  # atomic: a crash never leaves a half-written artifact
    return {name: Artifact(name, data["abi"], data["bytecode"]) for name, data in raw.items()}


def artifact(name: str = "KeyLedger") -> Artifact:
    return compile_contracts()[name]
