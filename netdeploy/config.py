"""Load and validate ``netdeploy.toml``.

Every problem is reported as ``file:line: key.path: what is wrong (what is allowed)``, all of
them at once, so an admin fixes a broken config in one pass. Nothing downstream ever sees a
config that failed validation: :func:`load_config` either returns a complete :class:`Config`
or raises :class:`ConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from netdeploy.clusterkinds import Kind, kind_problems
from netdeploy.inventory import BadMac, normalize_mac
from netdeploy.tomlpos import line_of

REPO_ROOT = Path(__file__).resolve().parent.parent
# the demo lab in the source tree: what `./dev serve` and the tests pass explicitly
DEMO_CONFIG = REPO_ROOT / "config" / "netdeploy.toml"
# where an installed host keeps its config (systemd/netdeploy.service, the CLI's default)
SYSTEM_CONFIG = Path("/etc/netdeploy/netdeploy.toml")

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_RELEASE = re.compile(r"^(sequential|manual|waves:([1-9][0-9]*))$")
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]
Distribution = Literal["unicast", "multicast"]
_PCI_RULE = re.compile(
    r"^([0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}|PCI\\VEN_[0-9A-Fa-f]{4}&DEV_[0-9A-Fa-f]{4}\S*)$"
)
AUTO_HARDWARE = "auto"  # hardware = "auto": the profile whose match rules fit the reported facts


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    bind: str = "0.0.0.0"
    http_port: Port | None = None  # None: 80 when we may bind it, else 8080
    tftp_port: Port | None = None  # None: 69 when we may bind it, else 6969
    public_url: str | None = None  # how booting machines reach us; default from bind/port
    database: str | None = None  # SQLAlchemy URL; default sqlite in state_dir
    state_dir: Path = Path("/var/lib/netdeploy")
    bootfiles_dir: Path = REPO_ROOT / "bootfiles"
    images_dir: Path = Path("/var/lib/netdeploy/images")
    templates_dir: Path = REPO_ROOT / "config" / "templates"
    admin_token: str | None = None  # None: generated at first start, kept in state_dir

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL such as http://10.0.0.1:8080")
        return value.rstrip("/") if value else value


class TftpConfig(_Section):
    enabled: bool = True
    max_transfers: Annotated[int, Field(ge=1)] = 2000
    max_per_client: Annotated[int, Field(ge=1)] = 16
    timeout: Seconds = 1.0  # first retransmission; doubles up to `retries` times
    retries: Annotated[int, Field(ge=1, le=20)] = 5
    # A transfer whose first ACK never comes (spoofable UDP) is dropped after this many
    # seconds of retransmitting, whatever timeout the client asked for; such transfers hold
    # at most max_unacked slots, the oldest given up for a new request when they are full.
    # 1,024 holds a whole rack's burst: at 256, a 500-client storm released at once lost
    # 94-133 real clients to reclaiming before they could ACK (bench/tftp.py, atftp).
    first_ack_budget: Annotated[float, Field(gt=0, le=10)] = 10.0
    max_unacked: Annotated[int, Field(ge=1)] = 1024
    # a client's RFC 2349 timeout above this is not acknowledged (the server's own is used)
    max_client_timeout: Annotated[int, Field(ge=1, le=255)] = 5
    max_blksize: Annotated[int, Field(ge=512, le=65464)] = 65464
    max_windowsize: Annotated[int, Field(ge=1, le=65535)] = 64
    # Boot files up to cache_file_max_bytes are kept in memory (bounded by cache_max_bytes)
    # so a boot storm reads each file once; larger files are read per block.
    cache_max_bytes: Annotated[int, Field(ge=0)] = 256 << 20
    cache_file_max_bytes: Annotated[int, Field(ge=0)] = 64 << 20
    # The data phase (DATA, ACKs, retransmission) runs in C on native_threads worker threads
    # (0: one per CPU) when netdeploy was built with its C part; false, or a build without a
    # compiler, serves it from the event loop in Python (decision 0021)
    native: bool = True
    native_threads: Annotated[int, Field(ge=0, le=64)] = 0


class HttpConfig(_Section):
    max_image_streams: Annotated[int, Field(ge=1)] = 32
    # one client address holds at most this many of those slots (its other requests queue)
    max_streams_per_address: Annotated[int, Field(ge=1)] = 8
    # a request over the limit waits this long for a slot before it is answered 503 with
    # its place in line (0: answer at once)
    image_queue_wait: Annotated[float, Field(ge=0, le=300)] = 20.0
    # seconds a queued client is told to wait before asking again (Retry-After)
    image_retry_after: Annotated[int, Field(ge=1, le=3600)] = 5
    # a stream that moves no bytes for this long is closed and its slot given to the next
    stall_timeout: Seconds = 30.0
    # slow or idle connections: a connection waiting for a request (idle keep-alive, or a
    # request head that does not complete) closes after keepalive_timeout; a request body
    # must arrive within body_timeout; one address keeps max_connections_per_address open
    body_timeout: Seconds = 30.0
    keepalive_timeout: Seconds = 15.0
    max_connections_per_address: Annotated[int, Field(ge=1)] = 256
    # The agent asks for exactly this long (the plan tells it: ND_GATE_TIMEOUT); below 5 s
    # every held node would poll in a tight loop, above an hour proxies and NATs cut the
    # idle connection first.
    gate_poll_timeout: Seconds = 60.0

    @field_validator("gate_poll_timeout")
    @classmethod
    def _gate_poll(cls, value: float) -> float:
        if not 5 <= value <= 3600:
            raise ValueError(
                f"{value:g} s is not a long-poll the agent can use: below 5 s every held node "
                "asks in a tight loop, above 3600 s proxies and NATs cut the idle connection; "
                "use 5 to 3600 (default 60)"
            )
        return value


class DiscoveryConfig(_Section):
    """``[discovery]``: unknown MACs are recorded, but a flood of them cannot grow the store.

    At most ``max_rows`` discovered machines are kept (the oldest go first); at most
    ``events_per_minute`` newly seen MACs are logged one by one (the rest are counted in one
    event per minute); a discovered MAC's or a first-stage address's boots are logged once
    per ``record_interval`` seconds.
    """

    max_rows: Annotated[int, Field(ge=1)] = 1000
    events_per_minute: Annotated[int, Field(ge=0)] = 60
    record_interval: Seconds = 300.0


class DashboardConfig(_Section):
    """``[dashboard]``: who may look at ``GET /`` and the event stream without logging in."""

    public_read: bool = False  # true: a wall screen shows the read-only view without the token
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0  # admin login lifetime
    # a node imaging (or waiting at the gate) unheard of this long is marked stale, long
    # before its phase timeout fails it (netdeploy/rollout/liveness.py)
    stale_after: Seconds = 90.0


class MetricsConfig(_Section):
    """``[metrics]``: who may scrape ``GET /metrics`` (node names, states, addresses)."""

    public: bool = False  # true: anyone who reaches the server
    token: str | None = None  # a Prometheus bearer token (bearer_token_file), besides admin


class RolloutConfig(_Section):
    """How the rollout core commits agent reports (see docs/decisions/0004)."""

    # Batch concurrent reports into one transaction (one writer task). Off: one commit per
    # report, the naive design, kept for the side-by-side benchmark.
    group_commit: bool = True
    max_batch: Annotated[int, Field(ge=1, le=10000)] = 1000
    sweep_interval: Seconds = 5.0  # how often phase timeouts are checked
    # health/joined reports move the gate only this long after the answer files carrying
    # their report token were served: a machine racing the node for its PXE boot shows up
    # (claims, and raises the alarm) well within it (docs/security.md)
    report_quiet: Annotated[float, Field(ge=0, le=3600)] = 60.0


class MulticastConfig(_Section):
    """``[multicast]``: one stream per image for the whole rack (docs/multicast.md)."""

    enabled: bool = True
    group: str = "239.255.78.1"  # administratively scoped (RFC 2365)
    port_range: tuple[Port, Port] = (47800, 47899)  # two ports per session: data, feedback
    ttl: Annotated[int, Field(ge=1, le=255)] = 1
    interface: str | None = None  # name or IPv4 address; None: where the joins arrive
    max_rate: Annotated[float, Field(gt=0)] = 1000.0  # Mbit/s on the wire
    min_receivers: Annotated[int, Field(ge=1)] = 1
    max_wait: Annotated[float, Field(ge=0)] = 60.0  # seconds after the first join
    slow_receiver_loss: Annotated[float, Field(gt=0, lt=1)] = 0.05  # lost fraction: drop
    slow_receiver_timeout: Seconds = 30.0  # silent, or incomplete this long after the pass
    slice_size: Annotated[int, Field(ge=512, le=65491)] = 11816  # 8 IPv4 fragments at MTU 1500
    late_joiners: Literal["next_session", "unicast"] = "next_session"

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        if not address.is_multicast:
            raise ValueError(f"{value} is not a multicast address; use 239.0.0.0/8 (RFC 2365)")
        return value

    @field_validator("port_range")
    @classmethod
    def _ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[1] - value[0] < 1:
            raise ValueError("needs at least two ports, low first, e.g. [47800, 47899]")
        return value


class DhcpConfig(_Section):
    """``[dhcp]``: the built-in ProxyDHCP (docs/boot.md "ProxyDHCP"). The LAN's DHCP server
    keeps handing out addresses; we add the boot information PXE clients need."""

    proxy: bool = False
    interface: str | None = None  # the boot LAN's interface, e.g. "eth1"; required with proxy
    # IPv4 address clients use as next-server (TFTP) and server id; None: the interface's own
    address: str | None = None
    port: Port = 67  # real clients always use 67 and 4011; other ports only for tests
    pxe_port: Port = 4011
    # identical requests of one MAC within this many seconds make one event with a count
    event_interval: Seconds = 30.0

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        if address.is_unspecified or address.is_multicast:
            raise ValueError(f"{value} cannot be a server address; use the boot LAN's address")
        return value

    @model_validator(mode="after")
    def _needs_interface(self) -> DhcpConfig:
        if self.proxy and not self.interface:
            raise ValueError(
                'proxy = true needs interface = "<name>": the interface on the boot LAN '
                "(ProxyDHCP listens for broadcasts there)"
            )
        return self


class MassStorageDriver(_Section):
    """One ``[SysprepMassStorage]`` line: ``hardware_id = "inf", "dir", "desc", "tag"``."""

    hardware_id: str
    inf: str
    disk_directory: str = ""
    disk_description: str = ""
    disk_tag: str = ""


class HardwareMatch(_Section):
    """``[hardware.NAME.match]``: which reported machines this profile is for (issue 18).

    Every rule given must hold: ``product`` lists SMBIOS product names (any one, exact, case
    ignored); ``pci`` lists storage-controller PCI IDs (``"1af4:1001"`` or
    ``"PCI\\VEN_1AF4&DEV_1001"``), any one of which the machine must report.
    """

    product: list[str] = []
    pci: list[str] = []

    @field_validator("pci")
    @classmethod
    def _pci(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _PCI_RULE.match(item):
                raise ValueError(
                    f"{item!r} is not a PCI ID; write it as vvvv:dddd (e.g. 1af4:1001) or "
                    "PCI\\VEN_1AF4&DEV_1001"
                )
        return value


class HardwareProfile(_Section):
    description: str = ""
    mass_storage: list[MassStorageDriver] = []
    # with hardware = "auto" a node gets the first profile (in config order) whose rules match
    match: HardwareMatch | None = None
    # the disk the agent writes the image to; "auto": the first of vd*, sd*, nvme*n*
    disk: Annotated[str, Field(pattern=r"^(auto|/dev/[A-Za-z0-9/_-]+)$")] = "auto"


class InjectTarget(_Section):
    """Where the agent puts one rendered answer file inside the freshly written image."""

    file: str  # an answer file of the node, e.g. "sysprep.inf"
    partition: Annotated[int, Field(ge=1, le=128)] = 1
    # ntfs: mounted by ntfs-3g (FUSE) in the agent; the kernel has no NTFS driver (decision 0007)
    fs: Literal["vfat", "ext4", "ntfs"] = "vfat"
    path: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]+$")]  # inside that filesystem

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the filesystem, without '..'")
        return value


class ImageConfig(_Section):
    file: Path  # relative paths are under server.images_dir
    format: Literal["raw", "raw+zstd"] = "raw"
    sha256: str | None = None
    description: str = ""
    hardware: list[str] = []


class SharedDisk(_Section):
    volume: Annotated[int, Field(ge=0)]
    letter: Annotated[str, Field(pattern=r"^[D-Zd-z]$")]


class Timeouts(_Section):
    imaging: Seconds = 3600.0
    starting: Seconds = 1800.0
    joining: Seconds = 1800.0


class ClusterConfig(_Section):
    image: str
    # how the answer files form and join the cluster (netdeploy/clusterkinds.py); None: they
    # do not, and the gate trusts each node's own "joined" (no member list is reported)
    kind: Kind | None = None
    first_node: str | None = None
    release: str = "sequential"
    answer_files: list[str] = ["sysprep.inf"]
    service_account: str | None = None
    inject: list[InjectTarget] = []
    # how the agent receives the image: one HTTP stream per node, or one multicast session
    # for every node of the cluster that images at the same time (docs/multicast.md)
    distribution: Distribution = "unicast"
    shared_disks: list[SharedDisk] = []
    # drive letter of the shared disk holding the quorum (windows2003: cluster /quorum /path:)
    quorum: Annotated[str, Field(pattern=r"^[D-Zd-z]$")] | None = None
    timeouts: Timeouts = Timeouts()
    vars: dict[str, Any] = {}

    @field_validator("release")
    @classmethod
    def _release(cls, value: str) -> str:
        if not _RELEASE.match(value):
            raise ValueError(
                f"{value!r} is not a release policy; use sequential, waves:N or manual"
            )
        return value


class NodeConfig(_Section):
    mac: str
    hostname: str
    cluster: str | None = None
    hardware: str | None = None
    image: str | None = None  # standalone nodes; a cluster node uses its cluster's image
    answer_files: list[str] | None = None
    inject: list[InjectTarget] | None = None
    distribution: Distribution | None = None  # None: the cluster's; unicast when standalone
    vars: dict[str, Any] = {}

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        try:
            return normalize_mac(value)
        except BadMac as exc:
            raise ValueError(str(exc)) from None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(
                f"{value!r} is not a host name; use letters, digits and '-', 1-63 characters"
            )
        return value


class Config(_Section):
    # inventory files (``[[nodes]]`` only), globs relative to this file: e.g. ["nodes.d/*.toml"];
    # `netdeploy adopt` writes into the directory of the first one
    include: list[str] = []
    server: ServerConfig = ServerConfig()
    tftp: TftpConfig = TftpConfig()
    http: HttpConfig = HttpConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    dashboard: DashboardConfig = DashboardConfig()
    metrics: MetricsConfig = MetricsConfig()
    rollout: RolloutConfig = RolloutConfig()
    multicast: MulticastConfig = MulticastConfig()
    dhcp: DhcpConfig = DhcpConfig()
    images: dict[str, ImageConfig] = {}
    hardware: dict[str, HardwareProfile] = {}
    clusters: dict[str, ClusterConfig] = {}
    nodes: list[NodeConfig] = []
    source: Path | None = Field(default=None, exclude=True)
    included: tuple[Path, ...] = Field(default=(), exclude=True)  # the files include found
    # command-line replacements of [server] keys, kept so a reload reads the config the same way
    overrides: dict[str, Any] = Field(default={}, exclude=True)

    def node_by_mac(self, mac: str) -> NodeConfig | None:
        # every agent report asks (known_ip): scanning 1,000 nodes was 5% of its CPU. The
        # index is kept with the list it indexes, so a copy with other nodes builds its own.
        cached = self.__dict__.get("_by_mac")
        if cached is None or cached[0] is not self.nodes:
            cached = (self.nodes, {n.mac: n for n in reversed(self.nodes)})  # the first wins
            self.__dict__["_by_mac"] = cached
        return cached[1].get(mac)

    def node_by_hostname(self, hostname: str) -> NodeConfig | None:
        wanted = hostname.lower()
        return next((n for n in self.nodes if n.hostname.lower() == wanted), None)

    def cluster_nodes(self, cluster: str) -> list[NodeConfig]:
        return [n for n in self.nodes if n.cluster == cluster]

    def image_for(self, node: NodeConfig) -> str | None:
        if node.image:
            return node.image
        return self.clusters[node.cluster].image if node.cluster else None

    def answer_files_for(self, node: NodeConfig) -> list[str]:
        if node.answer_files is not None:
            return node.answer_files
        return self.clusters[node.cluster].answer_files if node.cluster else []

    def inject_for(self, node: NodeConfig) -> list[InjectTarget]:
        if node.inject is not None:
            return node.inject
        return self.clusters[node.cluster].inject if node.cluster else []

    def distribution_for(self, node: NodeConfig) -> Distribution:
        if node.distribution is not None:
            return node.distribution
        return self.clusters[node.cluster].distribution if node.cluster else "unicast"

    def injects_into(self, fs: str) -> bool:
        """Whether any node gets an answer file injected into a filesystem of type ``fs``."""
        return any(target.fs == fs for node in self.nodes for target in self.inject_for(node))

    def image_path(self, name: str) -> Path:
        return self.server.images_dir / self.images[name].file

    @property
    def database_url(self) -> str:
        if self.server.database:
            return self.server.database
        return f"sqlite+aiosqlite:///{self.server.state_dir / 'netdeploy.db'}"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, each with file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PATH_KEYS = ("state_dir", "bootfiles_dir", "images_dir", "templates_dir")


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    server = data.get("server")
    if isinstance(server, dict):
        for key in _PATH_KEYS:
            if isinstance(server.get(key), str):
                server[key] = str((base / server[key]).resolve())
        if "images_dir" not in server and isinstance(server.get("state_dir"), str):
            server["images_dir"] = str(Path(server["state_dir"]) / "images")


@dataclass(frozen=True)
class _Source:
    file: str
    text: str


class _Locator:
    """Maps a location in the merged config to the file and line that set it: ``nodes`` past
    the main file's own come from included files, in the order they were read."""

    def __init__(self, main: _Source) -> None:
        self.main = main
        self.main_nodes = 0
        self.included: list[tuple[_Source, int]] = []  # (file, how many nodes it holds)

    def locate(self, loc: tuple[str | int, ...]) -> tuple[str, str, tuple[str | int, ...]]:
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            index = loc[1] - self.main_nodes
            if index >= 0:
                for source, count in self.included:
                    if index < count:
                        return source.file, source.text, ("nodes", index, *loc[2:])
                    index -= count
        return self.main.file, self.main.text, loc

    def problem(self, loc: tuple[str | int, ...], message: str) -> Problem:
        file, text, local = self.locate(loc)
        return Problem(file, line_of(text, local), _dotted(local), message)


def _pydantic_problems(exc: ValidationError, where: _Locator) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see README 'Config reference')"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(where.problem(loc, message))
    return problems


def _cross_check(
    cfg: Config, where: _Locator, node_index: list[int] | None = None
) -> list[Problem]:
    """References between entries: unknown clusters, images, profiles, duplicates.

    ``node_index`` maps ``cfg.nodes`` back to their places in the file when only some of them
    validated (see :func:`_cross_check_valid_parts`)."""
    problems: list[Problem] = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(where.problem(loc, message))

    seen_mac: dict[str, int] = {}
    seen_host: dict[str, int] = {}
    for i, node in zip(node_index or range(len(cfg.nodes)), cfg.nodes, strict=True):
        if node.mac in seen_mac:
            add(("nodes", i, "mac"), f"{node.mac} is already used by nodes[{seen_mac[node.mac]}]")
        seen_mac.setdefault(node.mac, i)
        host = node.hostname.lower()
        if host in seen_host:
            add(
                ("nodes", i, "hostname"),
                f"{node.hostname!r} is already used by nodes[{seen_host[host]}]",
            )
        seen_host.setdefault(host, i)
        if node.cluster is not None and node.cluster not in cfg.clusters:
            add(
                ("nodes", i, "cluster"),
                f"unknown cluster {node.cluster!r}; "
                f"defined: {', '.join(sorted(cfg.clusters)) or 'none'}",
            )
        if node.hardware == AUTO_HARDWARE:
            if not any(p.match for p in cfg.hardware.values()):
                add(
                    ("nodes", i, "hardware"),
                    'hardware = "auto" needs a profile with match rules: add '
                    "[hardware.NAME.match] with product = [...] or pci = [...]",
                )
        elif node.hardware is not None and node.hardware not in cfg.hardware:
            add(
                ("nodes", i, "hardware"),
                f"unknown hardware profile {node.hardware!r}; "
                f'defined: {", ".join(sorted(cfg.hardware)) or "none"} (or "auto")',
            )
        if node.image is not None and node.image not in cfg.images:
            add(
                ("nodes", i, "image"),
                f"unknown image {node.image!r}; defined: {', '.join(sorted(cfg.images)) or 'none'}",
            )
        if node.inject is not None and (node.cluster is None or node.cluster in cfg.clusters):
            files = cfg.answer_files_for(node)
            for j, target in enumerate(node.inject):
                if target.file not in files:
                    add(
                        ("nodes", i, "inject", j, "file"),
                        f"{target.file!r} is not an answer "
                        f"file of this node; its answer_files: {', '.join(files) or 'none'}",
                    )
        if node.cluster is None and node.image is None:
            add(("nodes", i), f"standalone node {node.hostname!r} needs an image (or a cluster)")
    for name, cluster in cfg.clusters.items():
        if cluster.image not in cfg.images:
            add(
                ("clusters", name, "image"),
                f"unknown image {cluster.image!r}; "
                f"defined: {', '.join(sorted(cfg.images)) or 'none'}",
            )
        members = [n for n in cfg.nodes if n.cluster == name]
        if not members:
            add(
                ("clusters", name),
                "cluster has no nodes; add [[nodes]] with cluster = "
                f"{name!r} or remove the cluster",
            )
        if cluster.first_node is None:
            add(
                ("clusters", name, "first_node"),
                "a cluster needs a first_node: the one node that starts alone and forms it",
            )
        elif cluster.first_node.lower() not in {n.hostname.lower() for n in members}:
            add(
                ("clusters", name, "first_node"),
                f"{cluster.first_node!r} is not a node of "
                f"this cluster; members: {', '.join(n.hostname for n in members) or 'none'}",
            )
        for j, target in enumerate(cluster.inject):
            if target.file not in cluster.answer_files:
                add(
                    ("clusters", name, "inject", j, "file"),
                    f"{target.file!r} is not one of "
                    f"the cluster's answer_files: {', '.join(cluster.answer_files)}",
                )
        letters = [d.letter.upper() for d in cluster.shared_disks]
        if len(set(letters)) != len(letters):
            add(("clusters", name, "shared_disks"), "a drive letter is assigned twice")
        if cluster.kind is not None:
            for loc, message in kind_problems(
                name,
                cluster.kind,
                cluster_vars=cluster.vars,
                members=[(i, n.hostname, n.vars) for i, n in enumerate(cfg.nodes) if n in members],
                service_account=cluster.service_account,
                quorum=cluster.quorum,
                shared_letters=letters,
            ):
                add(loc, message)
    for name, image in cfg.images.items():
        for j, profile in enumerate(image.hardware):
            if profile not in cfg.hardware:
                add(("images", name, "hardware", j), f"unknown hardware profile {profile!r}")
        if image.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", image.sha256):
            add(("images", name, "sha256"), "must be 64 lower-case hex digits")
    return problems


_ENTRY_MODELS: dict[str, type[_Section]] = {
    "images": ImageConfig,
    "hardware": HardwareProfile,
    "clusters": ClusterConfig,
}


def _cross_check_valid_parts(data: dict[str, Any], where: _Locator) -> list[Problem]:
    """The cross-reference problems among the entries that did validate, so that one run names
    every problem: a bad field and an unknown cluster together (README: "every problem at
    once"). A reference to an entry that is itself broken is not reported twice."""
    parts: dict[str, dict[str, Any]] = {}
    broken: set[str] = set()  # names of images, profiles and clusters that failed validation
    for section, model in _ENTRY_MODELS.items():
        raw = data.get(section)
        parts[section] = {}
        for name, entry in raw.items() if isinstance(raw, dict) else ():
            try:
                parts[section][name] = model.model_validate(entry)
            except ValidationError:
                broken.add(name)
    nodes, index, clusters_of_broken = [], [], set()
    raw_nodes = data.get("nodes")
    for i, entry in enumerate(raw_nodes if isinstance(raw_nodes, list) else ()):
        try:
            nodes.append(NodeConfig.model_validate(entry))
            index.append(i)
        except ValidationError:
            if isinstance(entry, dict) and isinstance(entry.get("cluster"), str):
                clusters_of_broken.add(entry["cluster"])
    partial = Config.model_construct(
        nodes=nodes, images=parts["images"], hardware=parts["hardware"], clusters=parts["clusters"]
    )
    problems = _cross_check(partial, where, node_index=index)

    def follows_from_a_field_error(problem: Problem) -> bool:
        if any(repr(name) in problem.message for name in broken):
            return True  # "unknown cluster 'x'" where [clusters.x] itself is broken
        # a member that failed validation is missing from the cluster's member list
        return any(
            problem.key in (f"clusters.{c}", f"clusters.{c}.first_node") for c in clusters_of_broken
        )

    return [p for p in problems if not follows_from_a_field_error(p)]


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """The text and the parsed table of one TOML file, or :class:`ConfigError` with its line."""
    file = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(file, None, "", "no such file; pass --config PATH")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc}")]) from None
    try:
        return source, tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([Problem(file, line, "", f"not valid TOML: {message}")]) from None


def include_files(base: Path, patterns: list[str]) -> list[Path]:
    """The files ``include`` names: each glob relative to ``base``, sorted, each file once."""
    found: list[Path] = []
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            if path.is_file() and path.resolve() not in found:
                found.append(path.resolve())
    return found


def _merge_includes(
    data: dict[str, Any], main: _Source, base: Path, extra: Sequence[Path]
) -> tuple[_Locator, list[Path]]:
    """Append the ``[[nodes]]`` of every included file to ``data["nodes"]``."""
    where = _Locator(main)
    patterns = data.get("include", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(
            [where.problem(("include",), 'must be a list of globs, e.g. ["nodes.d/*.toml"]')]
        )
    nodes = data.setdefault("nodes", [])
    if not isinstance(nodes, list):
        return where, []  # reported by validation: nodes must be [[nodes]]
    where.main_nodes = len(nodes)
    files = include_files(base, patterns)
    files += [p.resolve() for p in extra if p.resolve() not in files]
    problems: list[Problem] = []
    for path in files:
        text, table = _read_toml(path)
        source = _Source(str(path), text)
        others = sorted(set(table) - {"nodes"})
        if others:
            problems.append(
                Problem(
                    source.file,
                    line_of(text, (others[0],)),
                    others[0],
                    "an included file holds [[nodes]] only; put this in the main config",
                )
            )
            continue
        included = table.get("nodes", [])
        if not isinstance(included, list):
            problems.append(Problem(source.file, 1, "nodes", "must be [[nodes]] tables"))
            continue
        nodes.extend(included)
        where.included.append((source, len(included)))
    if problems:
        raise ConfigError(problems)
    return where, files


def load_config(
    path: Path | str, *, extra_includes: Sequence[Path] = (), **server_overrides: Any
) -> Config:
    """Read, validate and cross-check a config file and the inventory files it includes; raise
    :class:`ConfigError` on any problem.

    ``server_overrides`` (from the command line) replace keys of ``[server]`` before validation,
    so they are checked exactly like values from the file. ``extra_includes`` are read as if
    ``include`` named them (`netdeploy adopt` validates a new inventory file before it is put
    where ``include`` finds it).
    """
    path = Path(path)
    file = str(path)
    source, data = _read_toml(path)
    overrides = {k: v for k, v in server_overrides.items() if v is not None}
    if overrides:
        data.setdefault("server", {}).update(
            {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
        )
    if not isinstance(data.get("server", {}), dict):
        raise ConfigError(
            [Problem(file, line_of(source, ("server",)), "server", "must be a table: [server]")]
        )
    data.setdefault("server", {})
    _resolve_paths(data, path.resolve().parent)
    where, included = _merge_includes(
        data, _Source(file, source), path.resolve().parent, extra_includes
    )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc, where)
        # a bad value given on the command line is reported as such, not as a config line
        flags = {
            f"server.{key}": "--" + key.replace("_", "-").replace("database", "db")
            for key in overrides
        }
        problems = [
            Problem("command line", None, flags[p.key], p.message) if p.key in flags else p
            for p in problems
        ]
        raise ConfigError(problems + _cross_check_valid_parts(data, where)) from None
    problems = _cross_check(cfg, where)
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(
        update={
            "source": path.resolve(),
            "included": tuple(included),
            "overrides": dict(server_overrides),
        }
    )
