"""Chain backends: the embedded eth-tester chain, managed anvil / Hardhat nodes, or any URL.

``connect(spec)`` returns a ``Chain``: a Web3 handle, the signing accounts this process
holds keys for, and a ``close()`` that stops whatever the connection started.

- ``embedded`` runs py-evm in this process. So that shell commands can follow one another
  (deploy, then register, then record...), a persistent embedded chain keeps a journal of
  every block it mined (timestamp and raw transactions) and replays it on the next start;
  the replay is exact because the dev accounts, nonces and timestamps are the same.
- ``anvil`` / ``hardhat`` attach to a node started by ``qkdiov node`` when one is running,
  and otherwise start one on a free loopback port for the life of the command. A managed
  anvil keeps its state in ``.qkdiov/`` between commands (``anvil --state``).
- ``http(s)://`` and ``ws(s)://`` URLs talk to any Ethereum JSON-RPC node.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.providers.base import JSONBaseProvider

from .errors import BadInput, ChainUnavailable, JournalError, LedgerError
from .paths import PROJECT_ROOT, node_binary, state_dir, workspace

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10
ENGINES = ("anvil", "hardhat")
EMBEDDED_GAS_LIMIT = 60_000_000
NODE_GAS_LIMIT = 60_000_000  # per block on a managed node unless told otherwise

Account.enable_unaudited_hdwallet_features()


def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> list[LocalAccount]:
    """The well-known accounts of anvil and Hardhat (and of our embedded chain)."""
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def accounts_from_env() -> list[LocalAccount]:
    """Signers for a remote node: QKDIOV_PRIVATE_KEYS (comma separated) or QKDIOV_MNEMONIC."""
    keys = os.environ.get("QKDIOV_PRIVATE_KEYS", "").strip()
    if keys:
        try:
            return [Account.from_key(k.strip()) for k in keys.split(",") if k.strip()]
        except ValueError as exc:
            raise BadInput("QKDIOV_PRIVATE_KEYS holds a malformed private key") from exc
    mnemonic = os.environ.get("QKDIOV_MNEMONIC", "").strip()
    if mnemonic:
        try:
            return [
                Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}")
                for i in range(DEV_ACCOUNT_COUNT)
            ]
        except Exception as exc:
            raise BadInput("QKDIOV_MNEMONIC is not a valid BIP-39 mnemonic") from exc
    return []


def os_error_reason(exc: OSError) -> str:
    """Why a path could not be created or opened, for a one-line message.

    A file standing where a directory should be is named (mkdir reports only "File
    exists" or "Not a directory" for the path it was making); otherwise the OS's words.
    """
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
        path = Path(os.fsdecode(exc.filename))
        for candidate in [*reversed(path.parents), path]:
            if candidate.exists() and not candidate.is_dir():
                return f"{candidate} is not a directory"
    return exc.strerror or str(exc)


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to the existing file ``path`` and fsync it, or leave the file as it was.

    A write cut short (a full disk) is cut back off before the OSError is raised, so no
    torn line is left for a later append to bury: what the file held before is kept.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        kept = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, kept)
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def workspace_io(path: Path, doing: str) -> Iterator[None]:
    """An OSError on ``path`` (under the workspace) becomes one line naming QKDIOV_HOME.

    A QKDIOV_HOME that is a regular file, or lies under /proc or a read-only tree, is the
    user's to fix: the message says which path could not be used and why.
    """
    try:
        yield
    except OSError as exc:
        home = os.environ.get("QKDIOV_HOME")
        where = f"QKDIOV_HOME={home}" if home else f"the workspace {workspace()} (QKDIOV_HOME moves it)"
        raise BadInput(f"{where} is unusable: cannot {doing} {path}: {os_error_reason(exc)}") from None


@dataclass
class Chain:
    """A connection to one chain, with the accounts we can sign for."""

    name: str
    w3: Web3
    accounts: list[LocalAccount]
    chain_id: int
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _journal: EmbeddedJournal | None = field(default=None, repr=False)

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Send a signed transaction; on a persistent embedded chain, journal it once mined."""
        if self._journal is not None:
            self._journal.require_writable()
        tx_hash = self.w3.eth.send_raw_transaction(raw)
        if self._journal is not None:
            self._journal.append_transaction(self.latest_timestamp(), raw)
        return bytes(tx_hash)

    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> int:
        """Move a dev chain's clock forward and mine a block; returns the new timestamp."""
        if seconds <= 0:
            raise BadInput("advance_time needs a positive number of seconds")
        if self.name == "embedded":
            # eth-tester's time_travel(t) mines at t - 1 and refuses t at or below the
            # pending block's time, so set the pending timestamp and mine it directly.
            target = self.latest_timestamp() + seconds
            if self._journal is not None:
                self._journal.require_writable()
            _mine_embedded_block(self.w3.provider.ethereum_tester, target)  # type: ignore[attr-defined]
            if self._journal is not None:
                self._journal.append_empty_block(target)
            return self.latest_timestamp()
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return self.latest_timestamp()

    def account(self, address: str | None = None) -> LocalAccount:
        """The signer for ``address`` (default: the first account)."""
        if not self.accounts:
            raise BadInput(
                f"no signing account for chain {self.name}: set QKDIOV_PRIVATE_KEYS or QKDIOV_MNEMONIC"
            )
        if address is None:
            return self.accounts[0]
        if not Web3.is_address(address):
            raise BadInput(f"not an Ethereum address: {address!r}")
        for acct in self.accounts:
            if acct.address.lower() == address.lower():
                return acct
        raise BadInput(f"no private key for {address} on chain {self.name} (see QKDIOV_PRIVATE_KEYS)")

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lean(w3: Web3) -> Web3:
    """Drop web3 middleware this package never needs on its hot paths.

    ``validation`` asks the node for its chain id before every ``eth_call`` and gas
    estimate (two extra round trips per transaction); transactions here are signed
    locally with the chain id read once at connect. ``ens_name_to_address`` resolves ENS
    names, which no address here is. Result formatting (``attrdict``) stays.
    """
    for name in ("validation", "ens_name_to_address"):
        with contextlib.suppress(ValueError):
            w3.middleware_onion.remove(name)
    return w3


# ---------------------------------------------------------------------------- embedded


class EmbeddedJournal:
    """Append-only record of the embedded chain's blocks, replayed on the next start.

    The first line holds the genesis timestamp; each further line one block: its timestamp
    and, unless it is an empty block from ``advance_time``, one raw transaction.
    """

    def __init__(self, path: Path):
        self.path = path
        self._failed: str | None = None  # why an append failed; no block is journaled after it

    def read(self) -> tuple[int | None, list[dict[str, Any]]]:
        with workspace_io(self.path, "read"):
            if not self.path.exists():
                return None, []
            data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write cut short by a crash: its transaction was never acknowledged, so drop it.
            # Truncated in place: rewriting the file would put every earlier block at risk.
            data = data[: data.rfind(b"\n") + 1]
            with workspace_io(self.path, "repair"):
                os.truncate(self.path, len(data))
        try:
            lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        except ValueError:  # UnicodeDecodeError included
            raise ChainUnavailable(f"{self.path} is corrupt: delete it to start afresh") from None
        if not lines or "genesis_timestamp" not in lines[0]:
            raise ChainUnavailable(f"{self.path} is not an embedded-chain journal: delete it to start afresh")
        return int(lines[0]["genesis_timestamp"]), lines[1:]

    def start(self, genesis_timestamp: int) -> None:
        with workspace_io(self.path, "write"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"genesis_timestamp": genesis_timestamp}) + "\n")

    def require_writable(self) -> None:
        """Refuse a new block after a failed append: the chain in memory is a block ahead of
        the journal, and a later block journaled after that gap would not replay."""
        if self._failed is not None:
            raise JournalError(self._failed)

    def _append(self, entry: dict[str, Any]) -> None:
        self.require_writable()
        try:
            append_whole(self.path, (json.dumps(entry) + "\n").encode())
        except OSError as exc:
            self._failed = (
                f"cannot append to the embedded chain's journal {self.path}: {os_error_reason(exc)} "
                "(the block just mined is not kept; every one before it is)"
            )
            raise JournalError(self._failed) from None

    def append_transaction(self, timestamp: int, raw: bytes) -> None:
        self._append({"ts": timestamp, "raw": raw.hex()})

    def append_empty_block(self, timestamp: int) -> None:
        self._append({"ts": timestamp})


def _set_pending_timestamp(tester: Any, timestamp: int) -> None:
    backend = tester.backend
    backend.chain.header = backend.chain.header.copy(timestamp=timestamp)


def _mine_embedded_block(tester: Any, timestamp: int) -> None:
    _set_pending_timestamp(tester, timestamp)
    tester.mine_blocks()


def embedded_journal_path() -> Path:
    return state_dir() / "embedded" / "journal.jsonl"


def _embedded(persist: bool) -> Chain:
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    journal = EmbeddedJournal(embedded_journal_path()) if persist else None
    genesis_ts, entries = journal.read() if journal else (None, [])
    genesis_ts = genesis_ts or int(time.time())
    backend = PyEVMBackend.from_mnemonic(
        DEV_MNEMONIC,
        num_accounts=DEV_ACCOUNT_COUNT,
        hd_path="m/44'/60'/0'/0",  # the standard path, as anvil and Hardhat derive it
        genesis_parameters=PyEVMBackend.generate_genesis_params(
            overrides={"gas_limit": EMBEDDED_GAS_LIMIT, "timestamp": genesis_ts}
        ),
    )
    tester = EthereumTester(backend)
    w3 = _lean(Web3(EthereumTesterProvider(ethereum_tester=tester)))
    for entry in entries:  # replay each block at the timestamp it had
        if "raw" in entry:
            _set_pending_timestamp(tester, int(entry["ts"]))
            tester.send_raw_transaction("0x" + entry["raw"])
        else:
            _mine_embedded_block(tester, int(entry["ts"]))
    if journal is not None and not entries:
        journal.start(genesis_ts)
    return Chain("embedded", w3, dev_accounts(), int(w3.eth.chain_id), _journal=journal)


def reset_embedded() -> bool:
    """Forget the persistent embedded chain; returns whether there was one."""
    path = embedded_journal_path()
    if path.exists():
        path.unlink()
        return True
    return False


# ---------------------------------------------------------------------------- managed nodes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec hook: the child gets SIGTERM if this process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def node_command(
    engine: str,
    port: int,
    block_time: float | None,
    state_file: Path | None,
    gas_limit: int | None = None,
) -> list[str]:
    if engine == "anvil":
        binary = node_binary("anvil")
        if not binary.exists():
            raise ChainUnavailable(f"anvil is not installed ({binary}): run `npm ci` (or `make setup`)")
        cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"]
        cmd += ["--mnemonic", DEV_MNEMONIC, "--accounts", str(DEV_ACCOUNT_COUNT)]
        cmd += ["--gas-limit", str(gas_limit or NODE_GAS_LIMIT)]
        if block_time:
            cmd += ["--block-time", str(block_time)]
        if state_file is not None:
            with workspace_io(state_file.parent, "create"):
                state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(state_file)]
        return cmd
    if engine == "hardhat":
        binary = node_binary("hardhat")
        if not binary.exists():
            raise ChainUnavailable(f"hardhat is not installed ({binary}): run `npm ci` (or `make setup`)")
        if block_time or gas_limit:
            raise BadInput("--block-time and the block gas limit can be set for anvil only")
        return [str(binary), "node", "--hostname", "127.0.0.1", "--port", str(port)]
    raise BadInput(f"unknown engine {engine!r}: choose anvil or hardhat")


class ManagedNode:
    """A local testnet child process, stopped cleanly on close, Ctrl-C or interpreter exit."""

    def __init__(
        self,
        engine: str,
        port: int | None = None,
        block_time: float | None = None,
        state_file: Path | None = None,
        startup_timeout: float = 60.0,
        gas_limit: int | None = None,
    ):
        self.engine = engine
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = node_command(engine, self.port, block_time, state_file, gas_limit)
        log_path = state_dir_for_logs() / f"{engine}-{self.port}.log"
        with workspace_io(log_path, "write"):
            self._log = open(log_path, "w")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
                start_new_session=True,  # Ctrl-C reaches us; we stop the node ourselves
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self._log.close()
            raise ChainUnavailable(f"could not start {engine}: {exc}") from exc
        atexit.register(self.stop)
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 2}))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChainUnavailable(
                    f"{self.engine} exited with status {self.process.returncode} on start "
                    f"(log: {self._log.name})"
                )
            with contextlib.suppress(Exception):
                if w3.is_connected():
                    return
            time.sleep(0.1)
        raise ChainUnavailable(f"{self.engine} did not answer on {self.url} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT first (anvil writes its --state file then), SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if not self._log.closed:
            self._log.close()
        atexit.unregister(self.stop)


def state_dir_for_logs() -> Path:
    path = state_dir() / "logs"
    with workspace_io(path, "create"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def node_file(engine: str) -> Path:
    """Where ``qkdiov node`` announces a running node so ``--chain ENGINE`` can attach."""
    return state_dir() / "nodes" / f"{engine}.json"


def announce_node(node: ManagedNode) -> Path:
    path = node_file(node.engine)
    with workspace_io(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": node.url, "pid": node.process.pid}))
    return path


def running_node_url(engine: str) -> str | None:
    path = node_file(engine)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["url"])


# ---------------------------------------------------------------------------- URLs


class SyncWebSocketProvider(JSONBaseProvider):
    """JSON-RPC over one WebSocket connection, for the synchronous Web3 API.

    web3.py's own WebSocketProvider is asyncio-only; this keeps ``ws://`` nodes usable by
    the same synchronous client as HTTP ones.
    """

    def __init__(self, url: str, timeout: float = 30.0):
        super().__init__()
        from websockets.sync.client import connect as ws_connect

        self.endpoint_uri = url
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        try:
            self._ws = self._stack.enter_context(ws_connect(url, open_timeout=timeout, max_size=None))
        except Exception as exc:
            raise ChainUnavailable(f"cannot open a WebSocket to {url}: {exc}") from exc

    def make_request(self, method: Any, params: Any) -> Any:
        request_id = next(self._ids)
        payload = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        with self._lock:
            self._ws.send(payload)
            while True:
                message = json.loads(self._ws.recv(timeout=self._timeout))
                if isinstance(message, dict) and message.get("id") == request_id:
                    return message

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.make_request("web3_clientVersion", [])
        except Exception:
            if show_traceback:
                raise
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


def http_session(url: str) -> requests.Session:
    """A keep-alive session for JSON-RPC over HTTP.

    For a node on this machine the session ignores proxy and netrc settings from the
    environment, which requests otherwise reads again on every request (about 1 ms of a
    2 ms round trip to anvil); remote nodes keep them, since a proxy may be how they are
    reached.
    """
    session = requests.Session()
    if _is_local(url):
        session.trust_env = False
    return session


def _is_local(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class _LocalConnection:
    """One keep-alive HTTP/1.1 connection to a node on this machine, through http.client.

    Why: ``requests`` spends about 0.9 ms of CPU on a JSON-RPC call to anvil building and
    parsing the exchange, ``http.client`` about 0.3 ms (300 calls each, measured), and
    the simulator makes dozens of calls per simulated second. A node on this machine
    needs none of what ``requests`` adds (proxies, netrc, redirects). A connection the
    node closed while idle is noticed before the next request (its socket turns
    readable) and replaced; a request is never sent twice.
    """

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        if self._connection is not None and _closed_by_peer(self._connection):
            self.close()
        connection = self._connection
        try:
            if connection is None:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                self._connection = connection
                connection.connect()
                # as urllib3 does: headers and a large body go out as separate writes, and
                # Nagle's algorithm would hold the body back for the headers' ACK
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.request("POST", self._path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that reads as ready has been closed by the other side."""
    sock = connection.sock
    return sock is not None and bool(select.select([sock], [], [], 0)[0])


# Node limits: geth refuses JSON-RPC batches over 1,000 items and Besu over 1,024
# (--rpc-http-max-batch-size); both accept request bodies of 5 MB by default.
MAX_BATCH_ITEMS = 1_000
MAX_BATCH_BYTES = 4 * 1024 * 1024


class JsonRpc:
    """Raw JSON-RPC for the hot path: one keep-alive HTTP connection and real batches.

    Chains without an HTTP endpoint (the embedded chain, WebSocket nodes) go through the
    web3 provider one request at a time: same answers, no batching.
    """

    def __init__(self, w3: Web3) -> None:
        self._provider = w3.provider
        uri = getattr(w3.provider, "endpoint_uri", None)
        url = uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None
        self._url = url
        # a node on this machine: plain http.client; anything else: requests (proxies, netrc)
        local = url is not None and url.startswith("http://") and _is_local(url)
        self._local = _LocalConnection(url, timeout=60) if url and local else None
        self._session = http_session(url) if url and not local else None
        self._ids = itertools.count(1)

    @property
    def batches(self) -> bool:
        return self._url is not None

    def call(self, method: str, params: list[Any]) -> Any:
        reply = self.batch([(method, params)])[0]
        if "error" in reply:
            raise LedgerError(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply.get("result")

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """One reply per call, in order: each has "result" or "error"."""
        if self._url is None:
            return [self._provider.make_request(method, params) for method, params in calls]  # type: ignore[arg-type]
        replies: list[dict[str, Any]] = []
        chunk: list[str] = []
        ids: list[int] = []
        size = 0
        for method, params in calls:
            request_id = next(self._ids)
            item = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            if chunk and (len(chunk) >= MAX_BATCH_ITEMS or size + len(item) + 1 > MAX_BATCH_BYTES):
                replies += self._post(chunk, ids)
                chunk, ids, size = [], [], 0
            chunk.append(item)
            ids.append(request_id)
            size += len(item) + 1
        if chunk:
            replies += self._post(chunk, ids)
        return replies

    def _post(self, items: list[str], ids: list[int]) -> list[dict[str, Any]]:
        """One HTTP request for ``items``; the replies in the order of their ``ids``."""
        body = "[" + ",".join(items) + "]"
        try:
            if self._local is not None:
                status, data = self._local.post(body.encode())
                if status != 200:
                    raise LedgerError(f"JSON-RPC batch to {self._url} failed: HTTP {status}")
                answer = json.loads(data)
            else:
                assert self._session is not None and self._url is not None
                response = self._session.post(
                    self._url, data=body, headers={"Content-Type": "application/json"}, timeout=60
                )
                response.raise_for_status()
                answer = response.json()
        except (requests.RequestException, http.client.HTTPException, OSError, ValueError) as exc:
            raise LedgerError(f"JSON-RPC batch to {self._url} failed: {exc}") from exc
        if isinstance(answer, dict):  # a node that refuses the whole batch answers with one error
            raise LedgerError(f"the node refused a batch of {len(items)}: {answer.get('error', answer)}")
        by_id = {reply.get("id"): reply for reply in answer}
        return [by_id.get(i, {"error": {"message": "no reply in the batch"}}) for i in ids]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._local is not None:
            self._local.close()


def raw_log(log: dict[str, Any]) -> dict[str, Any]:
    """A log as a raw JSON-RPC answer spells it, in the types web3 gives (bytes, ints).

    ``blockTimestamp`` is kept where the node sends it (anvil does; the execution API
    added it in 2025), so a reader needs no block request for the time.
    """
    converted = {
        "address": log["address"],
        "topics": [bytes.fromhex(topic[2:]) for topic in log["topics"]],
        "data": bytes.fromhex(log["data"][2:]),
        "blockNumber": int(log["blockNumber"], 16),
        "logIndex": int(log["logIndex"], 16),
        "removed": bool(log.get("removed", False)),
    }
    if log.get("blockTimestamp"):
        converted["blockTimestamp"] = int(log["blockTimestamp"], 16)
    return converted


def _from_url(url: str, name: str | None = None, closers: list[Callable[[], None]] | None = None) -> Chain:
    closers = list(closers or [])
    if url.startswith(("ws://", "wss://")):
        provider: Any = SyncWebSocketProvider(url)
        closers.append(provider.close)
    else:
        provider = Web3.HTTPProvider(url, request_kwargs={"timeout": 30}, session=http_session(url))
    w3 = _lean(Web3(provider))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:
        for close in closers:
            close()
        raise ChainUnavailable(f"no Ethereum JSON-RPC node answers at {url}") from exc
    accounts = accounts_from_env()
    if not accounts and chain_id == 31337:  # anvil / Hardhat dev chain: the well-known keys
        accounts = dev_accounts()
    return Chain(name or url, w3, accounts, chain_id, _closers=closers)


# ---------------------------------------------------------------------------- entry point


def connect(
    spec: str = "embedded",
    *,
    persist: bool = True,
    block_time: float | None = None,
    gas_limit: int | None = None,
) -> Chain:
    """Open the chain named by ``spec``: embedded, anvil, hardhat, or a JSON-RPC URL.

    ``persist=False`` gives a throw-away chain (tests, benchmarks, simulations): a fresh
    embedded chain with no journal, or a fresh managed node that keeps no state.
    ``block_time`` (interval mining) and ``gas_limit`` (per block) configure a node this
    call starts; they are refused for chains it does not start.
    """
    spec = spec.strip()
    if spec == "embedded":
        if block_time or gas_limit:
            raise BadInput("--block-time needs a node: use --chain anvil")
        return _embedded(persist)
    if spec in ENGINES:
        url = running_node_url(spec) if persist else None
        if url is not None:
            if block_time or gas_limit:
                raise BadInput(f"a {spec} node started by `qkdiov node` is running: set --block-time there")
            return _from_url(url, name=spec)
        state_file = state_dir() / "anvil" / "state.json" if (persist and spec == "anvil") else None
        node = ManagedNode(spec, block_time=block_time, state_file=state_file, gas_limit=gas_limit)
        return _from_url(node.url, name=spec, closers=[node.stop])
    if spec.startswith(("http://", "https://", "ws://", "wss://")):
        if block_time or gas_limit:
            raise BadInput("--block-time applies to a node qkdiov starts, not to a URL")
        return _from_url(spec)
    raise BadInput(f"unknown chain {spec!r}: use embedded, anvil, hardhat or an http(s):// or ws:// URL")


@contextlib.contextmanager
def connected(spec: str = "embedded", **kwargs: Any) -> Iterator[Chain]:
    chain = connect(spec, **kwargs)
    try:
        yield chain
    finally:
        chain.close()
