"""Fixtures: a Redis-protocol server (a real redis-server, or `segstore serve --redis`, chosen by
SEGSTORE_REDIS_TARGET), a writer that writes the way the Relay Proxy does, and an offline SDK
client whose big-segment store is the SDK's own Redis store."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest
import redis
from ldclient.client import LDClient
from ldclient.config import BigSegmentsConfig, Config
from ldclient.integrations import Files, Redis

REPO = Path(__file__).resolve().parents[3]
DEFAULT_PREFIX = "launchdarkly"
TARGETS = ("redis", "segstore")
LISTENING = re.compile(r"^serve: redis listening on 127\.0\.0\.1:(\d+)$")
LISTENING_UNIX = re.compile(r"^serve: redis listening on unix:(.+)$")
LISTENING_TLS = re.compile(r"^serve: redis listening on tls:127\.0\.0\.1:(\d+)$")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# With `auth=True` a server has these two users and no anonymous access.
WRITER = ("writer", "writer-secret")
READER = ("sdk", "sdk-secret")


def target() -> str:
    value = os.environ.get("SEGSTORE_REDIS_TARGET", "redis")
    if value not in TARGETS:
        pytest.fail(f"SEGSTORE_REDIS_TARGET must be one of {TARGETS}, not {value!r}")
    return value


def cli_path() -> Path:
    path = Path(os.environ.get("SEGSTORE_CLI", REPO / "target" / "debug" / "segstore"))
    if not path.is_file():
        pytest.fail(f"the segstore CLI is not at {path}: run `cargo build --bin segstore` (or set SEGSTORE_CLI)")
    return path


def context_hash(key: str) -> str:
    """LaunchDarkly's context hash: standard padded base64 of SHA-256 of the key."""
    return base64.b64encode(hashlib.sha256(key.encode("utf-8")).digest()).decode("ascii")


def now_ms() -> int:
    return int(time.time() * 1000)


def run_cli(store: Path, *args: str, stdin: Optional[str] = None) -> str:
    done = subprocess.run(
        [str(cli_path()), "--dir", str(store), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"segstore {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def make_tls_files(directory: Path):
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (scripts/test-redis-sdks.sh installs it)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Preload:
    """Memberships to load before the server starts: raw context keys per segment ref."""

    included: Dict[str, List[str]] = field(default_factory=dict)
    excluded: Dict[str, List[str]] = field(default_factory=dict)
    synced_at: Optional[int] = None


class Server:
    """One Redis-protocol server on a loopback port, stopped (and checked) at teardown."""

    def __init__(self, kind: str, workdir: Path, prefix: str, store: Optional[Path] = None, auth: bool = False,
                 persist: bool = False, unix: bool = False, tls=None):
        self.kind = kind
        # With `tls` (cert, key), the server listens over TLS only.
        self.tls = tls
        self.auth = auth
        # redis-server keeps nothing across a restart unless told to (segstore always does).
        self.persist = persist
        self.workdir = workdir
        self.prefix = prefix
        self.store = store
        self.port: Optional[int] = None
        # With `unix`, the server listens on a Unix socket only (a short path: sun_path is small).
        self.unix_path: Optional[str] = None
        if unix:
            self.unix_path = os.path.join(tempfile.mkdtemp(prefix="ss-sock-"), "redis.sock")
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_path = workdir / "server.stderr"
        self._stdout_lines: List[str] = []

    @property
    def url(self) -> str:
        if self.unix_path:
            return f"unix://{self.unix_path}?db=0"
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def tls_opts(self) -> dict:
        """The `redis` connection options that trust the server's certificate."""
        return {"ssl_ca_certs": str(self.tls[0])} if self.tls else {}

    def client(self, user=None) -> redis.Redis:
        """A plain `redis` client on the server (the writer's connection unless `user`)."""
        user = user or (WRITER if self.auth else (None, None))
        where = {"unix_socket_path": self.unix_path} if self.unix_path else {"host": "127.0.0.1", "port": self.port}
        if self.tls:
            where.update(ssl=True, **self.tls_opts)
        return redis.Redis(**where, db=0, socket_timeout=10, username=user[0], password=user[1])

    def sdk_url(self, user=None) -> str:
        """The URL an SDK is given: the read-only user's when the server has users."""
        user = user or (READER if self.auth else None)
        if user is None:
            return self.url
        assert not self.unix_path and not self.tls, "users over a Unix socket or TLS: not needed here"
        return f"redis://{user[0]}:{user[1]}@127.0.0.1:{self.port}/0"

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def start(self, init: bool = True, port: Optional[int] = None):
        """Starts the server on `port` (a free one if None)."""
        self.port = None
        if self.kind == "redis":
            self._start_redis(port)
        else:
            self._start_segstore(init, port)

    def _start_redis(self, fixed_port: Optional[int]):
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            pytest.fail("redis-server is not installed (scripts/test-redis-sdks.sh installs it)")
        for _ in range(1 if fixed_port or self.unix_path else 5):
            port = fixed_port or free_port()
            where = ["--bind", "127.0.0.1", "--port", str(port)]
            if self.unix_path:
                where = ["--port", "0", "--unixsocket", self.unix_path, "--unixsocketperm", "700"]
            if self.tls:
                where = ["--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port), "--tls-cert-file",
                         str(self.tls[0]), "--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
            users = []
            if self.auth:
                users = ["--user", "default", "off",
                         "--user", WRITER[0], "on", f">{WRITER[1]}", "~*", "&*", "+@all",
                         "--user", READER[0], "on", f">{READER[1]}", "~*", "&*", "+@all", "-@write"]
            with open(self.stderr_path, "ab") as err:
                durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
                proc = subprocess.Popen(
                    [redis_server, *where, "--save", "",
                     *durability, "--dir", str(self.workdir), *users],
                    stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    self.port = None if self.unix_path else port
                    if self.client().ping():
                        self.proc = proc
                        return
                except (redis.ConnectionError, FileNotFoundError, OSError):
                    time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pytest.fail(f"redis-server did not start: {self.stderr_path.read_text(errors='replace')}")

    def _start_segstore(self, init: bool, port: Optional[int]):
        where = ["--redis-unix", self.unix_path] if self.unix_path else ["--redis", f"127.0.0.1:{port or 0}"]
        if self.tls:
            where = ["--redis-tls", f"127.0.0.1:{port or 0}", "--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        args = [str(cli_path()), "--dir", str(self.store), "serve", *where]
        if self.prefix != DEFAULT_PREFIX:
            args += ["--redis-prefix", self.prefix]
        if init:
            args.append("--init")
        if self.auth:
            password_file = self.workdir / "passwords"
            password_file.write_text(f"{WRITER[0]} rw {WRITER[1]}\n{READER[0]} ro {READER[1]}\n")
            password_file.chmod(0o600)
            args += ["--redis-password-file", str(password_file)]
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        err.close()
        found = threading.Event()
        listening = []

        def read_stdout(stdout):
            # Keeps draining stdout after the listening line so the server never blocks on it.
            for line in stdout:
                line = line.rstrip("\n")
                self._stdout_lines.append(line)
                tcp = (LISTENING_TLS if self.tls else LISTENING).match(line)
                unix = LISTENING_UNIX.match(line)
                if not listening and (tcp and not self.unix_path or unix and unix.group(1) == self.unix_path):
                    self.port = int(tcp.group(1)) if tcp else None
                    listening.append(line)
                    found.set()
            found.set()

        threading.Thread(target=read_stdout, args=(self.proc.stdout,), daemon=True).start()
        found.wait(START_TIMEOUT)
        if not listening:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            pytest.fail(
                f"`{' '.join(args)}` printed no `serve: redis listening on ...` line "
                f"(exit {self.proc.returncode}); stdout {self._stdout_lines!r}; "
                f"stderr: {self.stderr_path.read_text(errors='replace')}"
            )

    def stop(self):
        """SIGTERM; the server must exit 0 (redis-server does too)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{self.kind} did not exit within {STOP_TIMEOUT} s of SIGTERM")
        assert code == 0, (
            f"{self.kind} exited {code} after SIGTERM; stderr: {self.stderr_path.read_text(errors='replace')}"
        )


class RelayWriter:
    """Writes big-segment data over the Redis protocol in the Relay Proxy's shape."""

    def __init__(self, server: Server, conn: Optional[redis.Redis] = None):
        self.server = server
        self.conn = conn or server.client()

    def patch(
        self,
        ref: str,
        version: str,
        previous_version: Optional[str] = None,
        included_add: Iterable[str] = (),
        included_remove: Iterable[str] = (),
        excluded_add: Iterable[str] = (),
        excluded_remove: Iterable[str] = (),
        before_exec=None,
    ) -> bool:
        """Applies one patch (raw context keys, hashed here); False if it was not applied: the
        stored cursor differs from `previous_version`, or EXEC answered nil (WATCH conflict).
        `before_exec`, if given, runs after WATCH and before EXEC (to provoke a conflict)."""
        s = self.server
        lock, cursor = s.key("big_segments_lock"), s.key("big_segments_cursor")
        with self.conn.pipeline(transaction=True) as p:
            p.watch(lock)
            current = p.get(cursor)
            if current is not None and previous_version is not None and current.decode() != previous_version:
                p.unwatch()
                return False
            p.multi()
            p.set(lock, "")
            p.set(cursor, version)
            for keys, name, op in (
                (included_add, "big_segment_include", p.sadd),
                (included_remove, "big_segment_include", p.srem),
                (excluded_add, "big_segment_exclude", p.sadd),
                (excluded_remove, "big_segment_exclude", p.srem),
            ):
                for k in keys:
                    op(s.key(f"{name}:{context_hash(k)}"), ref)
            if before_exec is not None:
                before_exec()
            try:
                p.execute()
            except redis.WatchError:
                return False
        return True

    def mark_synced(self, at_ms: Optional[int] = None):
        self.conn.set(self.server.key("big_segments_synchronized_on"), str(now_ms() if at_ms is None else at_ms))

    def load(self, preload: Preload):
        """Writes a Preload over the protocol: one patch per ref and list, then synchronized_on."""
        cursor = self.conn.get(self.server.key("big_segments_cursor"))
        version = int(cursor) if cursor is not None else 0
        for ref, keys in preload.included.items():
            version += 1
            assert self.patch(ref, str(version), included_add=keys)
        for ref, keys in preload.excluded.items():
            version += 1
            assert self.patch(ref, str(version), excluded_add=keys)
        if preload.synced_at is not None:
            self.mark_synced(preload.synced_at)


@pytest.fixture
def start_server(tmp_path):
    """Starts a server: `start_server(prefix=..., preload=Preload(...))`.

    With target segstore a preload goes in through the CLI (`init`, `import`, `mark-synced`)
    before `serve` starts; with target redis, redis-server has no such path, so the same data
    is written over the protocol by the Relay-style writer right after it starts.
    """
    servers: List[Server] = []

    def start(prefix: str = DEFAULT_PREFIX, preload: Optional[Preload] = None, auth: bool = False,
              persist: bool = False, unix: bool = False, tls: bool = False) -> Server:
        workdir = tmp_path / f"server-{len(servers)}"
        workdir.mkdir()
        kind = target()
        store = workdir / "store" if kind == "segstore" else None
        server = Server(kind, workdir, prefix, store, auth, persist, unix,
                        make_tls_files(workdir) if tls else None)
        if kind == "segstore" and preload is not None:
            run_cli(store, "init")
            for lists, extra in ((preload.included, []), (preload.excluded, ["--excluded"])):
                for ref, keys in lists.items():
                    run_cli(store, "import", "--segment", ref, "--hash-keys", "--mode", "merge", *extra, "-",
                            stdin="".join(f"{k}\n" for k in keys))
            if preload.synced_at is not None:
                run_cli(store, "mark-synced", "--at", str(preload.synced_at))
            server.start(init=False)
        else:
            server.start(init=True)
            if preload is not None:
                RelayWriter(server).load(preload)
        servers.append(server)
        return server

    yield start
    errors = []
    for server in servers:
        try:
            server.stop()
        except AssertionError as e:
            errors.append(str(e))
        if server.unix_path:
            shutil.rmtree(os.path.dirname(server.unix_path), ignore_errors=True)
    assert not errors, "; ".join(errors)


@pytest.fixture
def server(start_server) -> Server:
    return start_server()


@pytest.fixture
def make_client(tmp_path):
    """An offline SDK client: flags and segments from a file, big segments from the SDK's own
    Redis big-segment store on `server`. Closed at teardown."""
    clients = []

    def make(server: Server, flags: dict, segments: dict, prefix: Optional[str] = None,
             stale_after: float = 120.0, cache_time: float = 5.0, status_poll_interval: float = 5.0,
             url: Optional[str] = None, redis_opts: Optional[dict] = None) -> LDClient:
        data = tmp_path / f"flags-{len(clients)}.json"
        data.write_text(json.dumps({"flags": flags, "segments": segments}))
        store = Redis.new_big_segment_store(
            url=url or server.sdk_url(),
            prefix=server.prefix if prefix is None else prefix,
            redis_opts=server.tls_opts if redis_opts is None else redis_opts,
        )
        config = Config(
            sdk_key="sdk-key-offline-test",
            update_processor_class=Files.new_data_source(paths=[str(data)]),
            send_events=False,
            diagnostic_opt_out=True,
            big_segments=BigSegmentsConfig(
                store=store,
                stale_after=stale_after,
                context_cache_time=cache_time,
                status_poll_interval=status_poll_interval,
            ),
        )
        client = LDClient(config=config, start_wait=5)
        assert client.is_initialized(), "the file data source did not load"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def segment(key: str, generation: Optional[int] = 1, kind: Optional[str] = None) -> dict:
    """A big (synced) segment as the LaunchDarkly data model spells it."""
    data = {
        "key": key,
        "version": 1,
        "unbounded": True,
        "included": [],
        "excluded": [],
        "rules": [],
        "salt": "salt",
        "deleted": False,
    }
    if generation is not None:
        data["generation"] = generation
    if kind is not None:
        data["unboundedContextKind"] = kind
    return data


def flag_matching(key: str, segment_key: str) -> dict:
    """A boolean flag: true when the context is in `segment_key`, false otherwise."""
    return {
        "key": key,
        "version": 1,
        "on": True,
        "variations": [False, True],
        "offVariation": 0,
        "fallthrough": {"variation": 0},
        "targets": [],
        "prerequisites": [],
        "rules": [
            {
                "id": f"{key}-rule",
                "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment_key], "negate": False}],
                "variation": 1,
                "trackEvents": False,
            }
        ],
        "salt": "salt",
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "deleted": False,
    }
