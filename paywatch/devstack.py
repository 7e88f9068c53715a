"""Real Kafka, Elasticsearch and Alertmanager servers on loopback, without Docker.

Why: tests that claim to exercise Kafka / Elasticsearch / Alertmanager must run against the genuine
servers, and CI starts from a fresh clone with nothing running. The servers come from package
registries only:

* Kafka (KRaft, broker+controller in one JVM): ``org.apache.kafka:kafka_2.13`` from Maven Central.
* Elasticsearch 8.19: the server and Netty4 HTTP jars from Maven Central, booted in-JVM by a tiny
  launcher (``deploy/local/elasticsearch``) since Elastic publishes no distribution there.
* Alertmanager: Debian's ``prometheus-alertmanager`` binary; Prometheus (only `bench/vs_prometheus.py`
  runs one): Debian's ``prometheus``.

Jars are resolved with Maven (reusing ``~/.m2``) into ``~/.cache/paywatch/devstack``. Each server
is an object bound to a port and a work dir, so a test can run an isolated second instance (own port,
own data) and stop/kill/restart it for outage scenarios without touching the shared one. A server
already answering on the port is reused and never stopped by us.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = Path(os.environ.get("PAYWATCH_DEPLOY_DIR", REPO_ROOT / "deploy" / "local"))
CACHE_DIR = Path(os.environ.get("PAYWATCH_DEVSTACK_CACHE", Path.home() / ".cache" / "paywatch" / "devstack"))
HOME_DIR = Path(os.environ.get("PAYWATCH_DEVSTACK_HOME", REPO_ROOT / ".devstack"))

# Default ports of the shared instances; the env overrides let a second checkout run its own set.
KAFKA_PORT = int(os.environ.get("PAYWATCH_DEVSTACK_KAFKA_PORT", "19092"))
ES_PORT = int(os.environ.get("PAYWATCH_DEVSTACK_ES_PORT", "19200"))
ALERTMANAGER_PORT = int(os.environ.get("PAYWATCH_DEVSTACK_ALERTMANAGER_PORT", "19093"))

DEFAULT_AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
"""


class DevstackError(RuntimeError):
    """A server could not be fetched or did not become healthy."""


# --------------------------------------------------------------------------- helpers


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port free right now on loopback (for isolated, per-test servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Cross-process lock: several pytest sessions may fetch or start the same server at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DevstackError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def _maven_libs(pom: Path, dest: Path) -> None:
    """Resolve the pom's runtime dependencies into dest (atomic: a half-fetched dir never counts)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError("Maven (mvn) is required to fetch the devstack servers: apt-get install maven")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def kafka_dist() -> Path:
    """Kafka jars (fetched once, cached by the pom's content)."""
    pom = DEPLOY_DIR / "kafka" / "pom.xml"
    home = CACHE_DIR / f"kafka-{_digest(pom)}"
    with _flock(CACHE_DIR / "kafka.lock"):
        if not (home / "libs").is_dir():
            _maven_libs(pom, home / "libs")
    return home


def elasticsearch_dist() -> Path:
    """Elasticsearch jars plus the compiled launcher (cached by pom + launcher sources)."""
    src = DEPLOY_DIR / "elasticsearch"
    pom, java_src = src / "pom.xml", src / "src" / "main" / "java"
    home = CACHE_DIR / f"elasticsearch-{_digest(pom, java_src)}"
    with _flock(CACHE_DIR / "elasticsearch.lock"):
        if not (home / "classes").is_dir():
            if not (home / "libs").is_dir():
                _maven_libs(pom, home / "libs")
            javac = shutil.which("javac")
            if javac is None:
                raise DevstackError("a JDK (javac, Java 17+) is required: apt-get install openjdk-17-jdk-headless")
            tmp = home / "classes.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            sources = [str(p) for p in sorted(java_src.rglob("*.java"))]
            _run([javac, "-nowarn", "-d", str(tmp), "-cp", str(home / "libs" / "*"), *sources])
            tmp.rename(home / "classes")
    return home


def debian_binary(package: str, names: tuple[str, ...], install: bool = False) -> str:
    """The path of a binary from a Debian package; with `install`, apt-get installs the package
    when it is missing, as `.ci/run` does (through sudo when not root)."""
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    if install and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        _run([*env, "update", "-q"])
        _run([*env, "install", "-y", "-q", "--no-install-recommends", package])
        return debian_binary(package, names)
    raise DevstackError(f"{names[0]} not found: apt-get install {package}")


def alertmanager_binary(install: bool = False) -> str:
    return debian_binary("prometheus-alertmanager", ("prometheus-alertmanager", "alertmanager"), install)


def prometheus_binary(install: bool = False) -> str:
    return debian_binary("prometheus", ("prometheus",), install)


def fetch(*names: str) -> None:
    """Download/build everything needed to start the named servers (all when none named)."""
    names = names or ("kafka", "elasticsearch", "alertmanager")
    if "kafka" in names:
        kafka_dist()
    if "elasticsearch" in names:
        elasticsearch_dist()
    if "alertmanager" in names:
        alertmanager_binary()


# --------------------------------------------------------------------------- servers


class Server:
    """A background server process: own process group, log file and pid file in its work dir."""

    name = "server"
    start_timeout = 180.0  # generous: a loaded 2-core CI box starts JVMs slowly

    def __init__(self, port: int, workdir: Path | str | None = None) -> None:
        self.port = port
        self.workdir = Path(workdir) if workdir else HOME_DIR / f"{self.name}-{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # True when start() found the server already healthy: someone else owns it, never stop it
        self.reused = False
        self.startup_seconds: float | None = None

    # subclasses
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config / format storage before the first start."""

    def is_up(self) -> bool:
        raise NotImplementedError

    # common
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    def pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, timeout: float | None = None) -> Server:
        """Start (or reuse a server already healthy on the port) and wait until it is healthy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with _flock(self.workdir / ".start.lock"):
            if self.is_up():
                self.reused = True
                return self
            if port_open(self.port):
                raise DevstackError(f"port {self.port} is taken by something that is not a healthy {self.name}")
            self._prepare()
            t0 = time.monotonic()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self._command(),
                    cwd=self.workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pid_path.write_text(f"{self.proc.pid}\n")
            self.reused = False
            self._wait_healthy(timeout or self.start_timeout)
            self.startup_seconds = round(time.monotonic() - t0, 1)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DevstackError(f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
            if self.is_up():
                return
            time.sleep(0.3)
        self.kill()
        raise DevstackError(
            f"{self.name} not healthy on port {self.port} after {timeout:.0f}s; log tail:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, sig: int) -> int | None:
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # the process group: JVM plus anything it spawned
        return pid

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return True
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (clean shutdown, data flushed), SIGKILL if it does not exit in time.

        Acts on the pid file of this work dir, so `devstack down` can stop what another process
        started; callers that only reused a server (`reused`) should not call it."""
        pid = self._signal(signal.SIGTERM)
        if pid is not None and not self._wait_exit(pid, timeout):
            self._signal(signal.SIGKILL)
            self._wait_exit(pid, 10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL: a crash, for outage tests (no clean shutdown)."""
        pid = self._signal(signal.SIGKILL)
        if pid is not None:
            self._wait_exit(pid, 10)
        self._forget()

    def _forget(self) -> None:
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        self.proc = None
        # the OS may keep the port in TIME_WAIT briefly; servers set SO_REUSEADDR so restart is fine

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "port": self.port,
            "up": self.is_up(),
            "pid": self.pid(),
            "workdir": str(self.workdir),
            "log": str(self.log_path),
        }

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self.reused:
            self.stop()


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise DevstackError("Java 17+ is required: apt-get install openjdk-17-jdk-headless")
    return java


class KafkaServer(Server):
    """Single-node KRaft Kafka (broker + controller), auto topic creation, replication factor 1."""

    name = "kafka"

    def __init__(
        self,
        port: int = KAFKA_PORT,
        workdir: Path | str | None = None,
        controller_port: int | None = None,
        heap: str = "768m",
    ) -> None:
        super().__init__(port, workdir)
        self.controller_port = controller_port or port + 2  # 19094: 19093 belongs to Alertmanager
        self.heap = heap

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        template = (DEPLOY_DIR / "kafka" / "server.properties.in").read_text()
        data = self.workdir / "data"
        (self.workdir / "server.properties").write_text(
            template.replace("@PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(data))
        )
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            _run(
                [
                    _java(),
                    *self._jvm_common(),
                    "-cp",
                    self._classpath(),
                    "kafka.tools.StorageTool",
                    "format",
                    # one token: a base64url id may start with "-", which argparse would read as an option
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(self.workdir / "server.properties"),
                    "--ignore-formatted",
                ]
            )

    def _classpath(self) -> str:
        return str(kafka_dist() / "libs" / "*")

    def _jvm_common(self) -> list[str]:
        return [
            f"-Dlog4j.configuration=file:{DEPLOY_DIR / 'kafka' / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-Djava.awt.headless=true",
        ]

    def _command(self) -> list[str]:
        return [
            _java(),
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            *self._jvm_common(),
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]

    def is_up(self) -> bool:
        """A metadata round-trip, not just an open port: the broker must be serving."""
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "log_level": 0, "socket.connection.setup.timeout.ms": 2000}
        )
        try:
            md = admin.list_topics(timeout=3)
            return bool(md.brokers)
        except Exception:
            return False


class ElasticsearchServer(Server):
    """One genuine Elasticsearch 8.19 node, security off, single-node discovery."""

    name = "elasticsearch"
    start_timeout = 300.0

    def __init__(
        self,
        port: int = ES_PORT,
        workdir: Path | str | None = None,
        transport_port: int | None = None,
        heap: str = "1g",
    ) -> None:
        super().__init__(port, workdir)
        self.transport_port = transport_port or port + 100
        self.heap = heap

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        dist = elasticsearch_dist()
        cp = f"{dist / 'classes'}{os.pathsep}{dist / 'libs' / '*'}"
        return [
            _java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Dlog4j2.disable.jmx=true",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dorg.apache.logging.log4j.level=INFO",  # server log lines into elasticsearch.log
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-cp",
            cp,
            "dev.paywatch.devstack.LocalEsNode",
            str(self.workdir / "node"),
            str(self.port),
            str(self.transport_port),
        ]

    def is_up(self) -> bool:
        """Cluster health at least yellow, answered by a real Elasticsearch (product header)."""
        if not port_open(self.port):
            return False
        try:
            r = httpx.get(
                f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}, timeout=5
            )
        except httpx.HTTPError:
            return False
        return (
            r.status_code == 200
            and r.headers.get("x-elastic-product") == "Elasticsearch"
            and r.json().get("status") in ("green", "yellow")
        )


class _PrometheusProjectServer(Server):
    """Alertmanager and Prometheus answer the same readiness endpoint."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_up(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class AlertmanagerServer(_PrometheusProjectServer):
    """Prometheus Alertmanager with a caller-supplied config; clustering disabled."""

    name = "alertmanager"
    start_timeout = 60.0

    def __init__(
        self, config_yaml: str = DEFAULT_AM_CONFIG, port: int = ALERTMANAGER_PORT, workdir: Path | str | None = None
    ) -> None:
        super().__init__(port, workdir)
        self.config_yaml = config_yaml

    @property
    def config_path(self) -> Path:
        return self.workdir / "alertmanager.yml"

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_yaml)

    def _command(self) -> list[str]:
        return [
            alertmanager_binary(),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    def reload(self, config_yaml: str) -> None:
        """Swap the config of a running Alertmanager (POST /-/reload), e.g. a new webhook target."""
        self.config_yaml = config_yaml
        self._prepare()
        r = httpx.post(f"{self.url}/-/reload", timeout=10)
        if r.status_code != 200:
            raise DevstackError(f"alertmanager reload failed: {r.status_code} {r.text}")


class PrometheusServer(_PrometheusProjectServer):
    """A Prometheus server with caller-supplied config and rule files, its own TSDB in the work dir.
    Only the comparison bench runs one: paywatch itself never needs Prometheus."""

    name = "prometheus"
    start_timeout = 60.0

    def __init__(self, config_yaml: str, rules_yaml: str, port: int, workdir: Path | str) -> None:
        super().__init__(port, workdir)
        self.config_yaml = config_yaml
        self.rules_yaml = rules_yaml

    def _prepare(self) -> None:
        (self.workdir / "prometheus.yml").write_text(self.config_yaml)
        (self.workdir / "rules.yml").write_text(self.rules_yaml)

    def _command(self) -> list[str]:
        return [
            prometheus_binary(),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]


SERVERS = ("kafka", "elasticsearch", "alertmanager")


def default_server(name: str) -> Server:
    """The shared instance on its default port and work dir."""
    if name == "kafka":
        return KafkaServer()
    if name == "elasticsearch":
        return ElasticsearchServer()
    if name == "alertmanager":
        return AlertmanagerServer()
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
