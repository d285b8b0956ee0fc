"""relay.toml: load, validate, resolve paths.

Every error names the file and the key path (`listeners.mx.bind: expected
HOST:PORT, got '25'`). `[policies.NAME]` tables are kept as they were written:
`relay.policyset.configure()` validates each with the policy's own options model,
so a policy declares its configuration in its own module and this module knows
no policy.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import string
import tomllib
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

EX_CONFIG = 78  # sysexits.h: configuration error; systemd is told not to restart on it

# without any [policies.*] table; the size and recipient limits are the relay's own rules
DEFAULT_POLICIES = ("headers",)


# a DKIM selector as [dkim_signing] and `relay dkim --selector` take it: one DNS label's
# characters (and dots), never a path (it names the key file)
SELECTOR_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$"

class ConfigError(Exception):
    """Invalid configuration; str() is the message an administrator sees."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from 30, 2.5, "30s", "10m", "5d"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 10m, 5d, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30s, 10m, 5d, got {value!r}")
    if seconds < 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def parse_hostport(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    raise ValueError(f"expected HOST:PORT, got {value!r}")


_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def check_domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(value):
        raise ValueError(f"expected a domain name, got {value!r}")
    return value


def check_network(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except (ValueError, TypeError):
        raise ValueError(f"expected a CIDR such as 10.0.0.0/8, got {value!r}") from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Bytes from 1048576, "512MiB", "1 GiB", "20MB" (powers of 1024 either way)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))
    raise ValueError(f"expected a size such as 1048576, \"512MiB\" or \"1GiB\", got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def format_hostport(value: tuple[str, int]) -> str:
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# written back (`relay config show`) the way relay.toml spells them
HostPort = Annotated[tuple[str, int], BeforeValidator(parse_hostport),
                     PlainSerializer(format_hostport, when_used="json")]
Domain = Annotated[StrictStr, AfterValidator(check_domain)]
Network = Annotated[str, BeforeValidator(check_network)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    hostname: StrictStr = Field(default_factory=socket.getfqdn)
    local_domains: list[Domain] = ["dienbien.gov.vn"]
    state_dir: StrictStr = "var"
    spool_dir: StrictStr = ""  # empty: state_dir/queue
    trusted_networks: list[Network] = []
    max_message_size: StrictInt = Field(26_214_400, ge=1024, le=2**31)
    max_recipients: StrictInt = Field(100, ge=1, le=100_000)
    max_connections: StrictInt = Field(200, ge=1, le=100_000)
    # per client (IPv4 address, IPv6 /64); trusted_networks are exempt; 0: no limit
    max_connections_per_ip: StrictInt = Field(50, ge=0, le=100_000)
    connection_rate_limit: StrictInt = Field(0, ge=0, le=1_000_000)  # new sessions per minute
    # SMTP front processes sharing the listeners (one queue runner); 0: one per core
    workers: StrictInt = Field(0, ge=0, le=256)
    idle_timeout: Duration = 300.0
    data_timeout: Duration = 600.0
    max_noop: StrictInt = Field(20, ge=1)
    # refused commands (MAIL, RCPT, syntax) per session before 421 (Postfix's
    # smtpd_hard_error_limit): a session cannot probe thousands of addresses
    max_errors: StrictInt = Field(20, ge=1, le=100_000)
    # a line in DATA ending in bare LF or CR: made CRLF (as Postfix >= 3.9), or 554 5.6.0
    bare_newline: Literal["normalize", "reject"] = "normalize"
    tls_cert: StrictStr = ""
    tls_key: StrictStr = ""
    decision_log: StrictStr = "log/decisions.jsonl"
    policy_dirs: list[StrictStr] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_bind: HostPort | None = None  # Prometheus /metrics, e.g. "127.0.0.1:9325"
    # Postfix-shaped mail log lines (relay.maillog): syslog (facility mail), stderr, off
    mail_log: Literal["syslog", "stderr", "off"] = "syslog"
    # program names relay/smtpd, relay/qmgr, ... (pflogsumm --syslog-name=relay)
    syslog_name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "relay"
    syslog_socket: StrictStr = "/dev/log"


class ListenerConfig(Section):
    bind: HostPort
    kind: Literal["mx", "submission", "smtps"] = "mx"


class BackendConfig(Section):
    kind: Literal["maildir", "smtp", "lmtp"] = "maildir"
    path: StrictStr = "mail"
    host: StrictStr = "127.0.0.1"
    port: StrictInt = Field(0, ge=0, le=65535)
    timeout: Duration = 60.0
    max_connections: StrictInt = Field(4, ge=1, le=256)


class OutboundConfig(Section):
    relayhost: HostPort | None = None
    starttls: Literal["none", "opportunistic", "required"] = "opportunistic"
    # PEM file of the CAs that may sign the relayhost's certificate (starttls = "required");
    # empty: the system's trust store
    ca_file: StrictStr = ""
    timeout: Duration = 60.0


class QueueConfig(Section):
    max_queue_lifetime: Duration = 5 * 86400.0
    min_backoff: Duration = 60.0
    max_backoff: Duration = 3600.0
    concurrency: StrictInt = Field(20, ge=1, le=1000)
    scan_interval: Duration = 30.0


class DirectoryConfig(Section):
    url: StrictStr = ""  # empty: SQLite file `directory.db` under state_dir
    cache_ttl: Duration = 30.0
    # how often a node asks the database whether anything changed (bounded by cache_ttl)
    poll_interval: Duration = 2.0
    # look-ups kept per process, negative answers too: least recently used go first
    cache_size: StrictInt = Field(10_000, ge=1, le=10_000_000)
    # a removed or renamed address is not given to anyone else for this long (Điều 4, 6)
    quarantine: Duration = 365 * 86400.0
    # suggest-address: {given} {family} {middle} {initials} (family+middle initials) {agency}
    address_pattern: StrictStr = "{given}{initials}"
    # local parts no personal mailbox may take, besides ubnd, tiepdan and agency codes
    reserved: list[StrictStr] = ["postmaster", "abuse", "hostmaster", "webmaster",
                                 "mailer-daemon", "noreply", "root", "admin"]
    # SMTP AUTH throttling (Điều 7.4): failures within auth_window lock a login / an IP
    auth_max_failures: StrictInt = Field(5, ge=1)
    auth_ip_max_failures: StrictInt = Field(20, ge=1)
    auth_window: Duration = 900.0
    auth_lockout: Duration = 900.0
    auth_failure_delay: Duration = 1.0  # added per failure to the answer, capped at 5 s


def check_milter_bind(value: Any) -> str:
    """`HOST:PORT` (also Postfix's `inet:HOST:PORT`), `unix:/absolute/path`, or "" (the
    default socket in state_dir)."""
    if value == "":
        return value
    if isinstance(value, str) and value.startswith("unix:"):
        if not value[5:].startswith("/"):
            raise ValueError(f"expected unix:/absolute/path, got {value!r}")
        return value
    if isinstance(value, str):
        value = value.removeprefix("inet:")
    host, port = parse_hostport(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_octal_mode(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    raise ValueError(f"expected an octal mode such as \"0660\", got {value!r}")


MilterBind = Annotated[StrictStr, BeforeValidator(check_milter_bind)]
OctalMode = Annotated[int, BeforeValidator(check_octal_mode),
                      PlainSerializer(lambda mode: f"{mode:04o}", when_used="json")]


class MilterConfig(Section):
    """`relay milter`: the policies inside an existing Postfix (smtpd_milters)."""

    # empty: unix:STATE_DIR/milter.sock. A Unix socket lets only processes in the socket's
    # group talk to the milter; over TCP any local process could feed it invented AUTH
    # logins and have them archived (relay milter warns)
    bind: MilterBind = ""
    socket_mode: OctalMode = 0o660  # unix socket only: Postfix's smtpd must be able to connect
    max_connections: StrictInt = Field(200, ge=1, le=100_000)
    workers: StrictInt = Field(0, ge=0, le=256)  # milter processes on the socket; 0: per core
    idle_timeout: Duration = 600.0  # longest wait for Postfix's next packet
    progress_interval: Duration = 10.0  # SMFIR_PROGRESS while a slow check runs at end of data
    # Prometheus /metrics of the milter process (its own port: `relay serve` may run too)
    metrics_bind: HostPort | None = None


class InspectionConfig(Section):
    """The DATA stage (MIME parsing, content policies) in worker processes with budgets."""

    # worker processes kept ready per front process; 0: one per core
    workers: StrictInt = Field(0, ge=0, le=256)
    # more are started when all are busy (a few slow messages must not stall the rest)
    max_workers: StrictInt = Field(0, ge=0, le=1024)  # 0: 4 x workers
    timeout: Duration = 20.0  # wall time per message; past it the worker is killed
    max_memory: Size = Field(1024 ** 3, ge=64 * 1024 ** 2)  # per worker (RLIMIT_DATA)
    max_parts: StrictInt = Field(1000, ge=1, le=1_000_000)  # MIME parts per message
    max_depth: StrictInt = Field(20, ge=1, le=1000)  # MIME nesting
    # what a message over budget gets (inspection.timeout | .memory | .too_complex);
    # a crashed worker is always a temporary failure
    action: Literal["reject", "tempfail", "tag", "log"] = "tempfail"
    actions: dict[Literal["inspection.timeout", "inspection.memory", "inspection.too_complex"],
                  Literal["reject", "tempfail", "tag", "log"]] = {}


class ArchiveConfig(Section):
    """Điều 8: what is archived, where, how it is signed and how long it is kept."""

    enabled: StrictBool = True
    kinds: list[Literal["personal", "official", "citizen_intake"]] = [
        "official", "citizen_intake"]
    mailboxes: list[StrictStr] = []  # opt-in: archived whatever their kind
    official: list[StrictStr] = []  # official addresses the naming rule cannot tell (no directory)
    # database: blobs commit with their entry (measured 30% faster on the SMTP path than
    # files with SQLite: no fsyncs besides the commit); files keep a huge archive out of the db
    blob_store: Literal["files", "database"] = "database"
    blob_path: StrictStr = "archive/blobs"  # relative to state_dir; a folder all nodes reach
    checkpoint_every: StrictInt = Field(1000, ge=1)  # sign the chain head every N entries
    checkpoint_interval: Duration = 3600.0  # ... or when the last checkpoint is this old
    signing_key: StrictStr = "archive/signing.key"  # relative to state_dir
    public_key: StrictStr = ""  # default: signing_key + ".pub"
    # keys replaced by `keygen --force` that verify still accepts for older checkpoints
    retired_public_keys: list[StrictStr] = []
    retention: Duration = 3650 * 86400.0  # 0: keep forever


def parse_day(value: Any) -> date:
    """A calendar day: a TOML date (2027-01-01) or the string "2027-01-01"; nothing else
    (pydantic alone would take 1 as 1970-01-01)."""
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a date such as 2027-01-01, got {value!r}")


Day = Annotated[date, BeforeValidator(parse_day)]

# what a case number may contain once formatted: it travels in a Subject and a CLI argument
_NUMBER_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")


def check_number_format(value: Any) -> str:
    """`TD-{year}-{seq:06d}`: exactly one {seq}, at most one {year}, nothing else."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string such as \"TD-{{year}}-{{seq:06d}}\", got {value!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if fields.count("seq") != 1 or fields.count("year") > 1 or set(fields) - {"seq", "year"}:
        raise ValueError(f"{value!r}: use {{seq}} once and optionally {{year}}, no other fields")
    try:
        sample = value.format(year=2026, seq=1)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if not _NUMBER_CHARS.fullmatch(sample) or not _NUMBER_CHARS.fullmatch(
            value.format(year=2026, seq=10**9)):
        raise ValueError(f"{value!r} gives {sample!r}: a case number is 1-63 letters, digits, "
                         "'.', '_', '/' or '-', starting with a letter or digit")
    return value


class PetitionRule(Section):
    """A change of the law: from `valid_from` on, petitions get this many working days."""

    valid_from: Day
    deadline_working_days: StrictInt = Field(ge=1, le=366)


class PetitionsConfig(Section):
    """Điều 8: citizen petitions at the intake mailboxes, tracked to an answer."""

    # off unless configured: an upgrade must not start mailing citizens before the
    # holidays and the deadline are set
    enabled: StrictBool = False
    number_format: Annotated[StrictStr, BeforeValidator(check_number_format)] = \
        "TD-{year}-{seq:06d}"
    deadline_working_days: StrictInt = Field(10, ge=1, le=366)  # Luật Tiếp công dân
    holidays: list[Day] = []
    holidays_file: StrictStr = ""  # one YYYY-MM-DD per line, # comments; relative to the config
    rules: list[PetitionRule] = []
    timezone: StrictStr = "Asia/Ho_Chi_Minh"  # working days and dates are counted here
    acknowledge: StrictBool = True
    # the loop brake: at most this many acknowledgements to one citizen from one intake
    # mailbox per 24 hours (further petitions still open cases)
    acknowledge_limit: StrictInt = Field(3, ge=1, le=1000)
    # where the acknowledgements and reminders are submitted when there is no queue of ours
    # (`relay milter`, the `remind` command): a Postfix listener that does not run the
    # milter again; unset: outbound.relayhost (milter) or the queue of `relay serve` (CLI)
    submit_to: HostPort | None = None
    remind_within: StrictInt = Field(2, ge=0, le=30)  # working days before the deadline
    reminder_from: StrictStr = ""  # empty: postmaster@ the first local domain

    _file_holidays: frozenset[date] = PrivateAttr(default_factory=frozenset)

    @property
    def all_holidays(self) -> frozenset[date]:
        return frozenset(self.holidays) | self._file_holidays


def read_holidays(path: Path) -> frozenset[date]:
    """A holidays file: one date per line, `#` starts a comment; errors name the line."""
    days = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            days.add(parse_day(text))
        except ValueError as exc:
            raise ValueError(f"line {n}: {exc}") from None
    return frozenset(days)


def check_nameserver(value: Any) -> str:
    """`IP` or `IP:PORT` (`[v6]:PORT`): a DNS server is given by address, never by name."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address or IP:PORT, got {value!r}")
    host, port = (parse_hostport(value) if value.count(":") == 1 or value.startswith("[")
                  else (value, 53))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address or IP:PORT, got {value!r}") from None
    return value


Nameserver = Annotated[str, BeforeValidator(check_nameserver)]


class DnsConfig(Section):
    """The DNS servers every DNS-using policy asks (SPF, DKIM, DMARC, blocklists, MX)."""

    nameservers: list[Nameserver] = []  # empty: /etc/resolv.conf
    timeout: Duration = 3.0  # the whole lookup, retries included
    cache_size: StrictInt = Field(10_000, ge=0, le=10_000_000)  # answers kept (by their TTL)


class DkimSigningConfig(Section):
    """Outbound mail from a local domain, sent by an authenticated or trusted client,
    is DKIM-signed (RFC 6376) as it leaves for another domain."""

    enabled: StrictBool = False
    selector: StrictStr = Field("relay", pattern=SELECTOR_PATTERN)
    # relative to state_dir; {domain} and {selector} are filled in
    key: StrictStr = "dkim/{domain}.{selector}.key"
    domains: list[Domain] = []  # empty: every local domain

    @field_validator("key")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(domain="d", selector="s")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"only {{domain}} and {{selector}} may be filled in, got "
                             f"{value!r}") from None
        return value

    def key_path(self, config: Config, domain: str, selector: str | None = None) -> Path:
        return config.state_file(self.key.format(domain=domain,
                                                 selector=selector or self.selector))

    def signs(self, config: Config, domain: str) -> bool:
        return domain in (self.domains or config.server.local_domains)


class WebConfig(Section):
    """`relay web`: the read-only console for auditors and petition officers."""

    bind: HostPort = ("127.0.0.1", 8025)  # behind the agency's reverse proxy for TLS, or:
    tls_cert: StrictStr = ""  # PEM chain: serve HTTPS directly
    tls_key: StrictStr = ""  # empty with tls_cert set: the key is in tls_cert
    session_timeout: Duration = 1800.0  # a session unused this long ends
    session_lifetime: Duration = 12 * 3600.0  # ... and any session after this long
    max_failures: StrictInt = Field(5, ge=1, le=1000)  # failed logins in a row before a lockout
    lockout: Duration = 900.0  # how long a locked account is refused, even with the right password
    language: Literal["vi", "en"] = "vi"  # default; each user can switch
    trusted_proxies: list[Network] = []  # reverse proxies whose X-Forwarded-For/-Proto count
    page_size: StrictInt = Field(50, ge=5, le=500)
    render_timeout: Duration = 10.0  # one archived message is parsed for display within this


class Config(Section):
    server: ServerConfig = ServerConfig()
    listeners: dict[str, ListenerConfig] = {
        "mx": ListenerConfig(bind="127.0.0.1:2525", kind="mx"),
        "submission": ListenerConfig(bind="127.0.0.1:5870", kind="submission"),
    }
    backend: BackendConfig = BackendConfig()
    outbound: OutboundConfig = OutboundConfig()
    queue: QueueConfig = QueueConfig()
    directory: DirectoryConfig = DirectoryConfig()
    milter: MilterConfig = MilterConfig()
    archive: ArchiveConfig = ArchiveConfig()
    dns: DnsConfig = DnsConfig()
    dkim_signing: DkimSigningConfig = DkimSigningConfig()
    inspection: InspectionConfig = InspectionConfig()
    petitions: PetitionsConfig = PetitionsConfig()


    web: WebConfig = WebConfig()
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: {} for name in DEFAULT_POLICIES}
    )

    # filled by from_dict(): where the file was, and what it said (for worker processes)
    source: Path | None = Field(None, exclude=True)
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)

    # --- resolved paths -------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def state_path(self) -> Path:
        return (self.base_dir / self.server.state_dir).resolve()

    def state_file(self, relative: str) -> Path:
        """A path from the config, relative to state_dir unless absolute."""
        return self.state_path / relative

    @property
    def spool_path(self) -> Path:
        return self.state_file(self.server.spool_dir or "queue")

    @property
    def directory_url(self) -> str:
        return self.directory.url or f"sqlite:///{self.state_path / 'directory.db'}"

    @cached_property
    def _trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n) for n in self.server.trusted_networks]

    def is_trusted(self, client_ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> bool:
        """A client in server.trusted_networks (agency servers): may relay without AUTH."""
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self._trusted_networks)

    @property
    def milter_bind(self) -> str:
        return self.milter.bind or f"unix:{self.state_path / 'milter.sock'}"

    def is_local(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return domain in self.server.local_domains


def format_errors(err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in (*prefix, *e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] != "value_error" and not isinstance(e.get("input"), dict):
            msg = f"{msg[0].lower()}{msg[1:]}, got {e['input']!r}"
        out.append(f"{path}: {msg}")
    return out


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    where = f"{source}: " if source else ""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join(where + line for line in format_errors(err))) from None
    config.source = source.resolve() if source else None
    config.raw = data
    errors: list[str] = []
    if not config.listeners:
        errors.append("listeners: at least one listener is required")
    binds = [(n, lc.bind) for n, lc in config.listeners.items()]
    for i, (name, bind) in enumerate(binds):
        for other, obind in binds[:i]:
            if bind == obind:
                errors.append(f"listeners.{name}.bind: {bind[0]}:{bind[1]} is also used by "
                              f"listeners.{other}")
    unix_lmtp = config.backend.kind == "lmtp" and config.backend.host.startswith("/")
    if config.backend.kind in ("smtp", "lmtp") and not config.backend.port and not unix_lmtp:
        errors.append(f"backend.port: required when backend.kind is {config.backend.kind!r}")
    errors.extend(_check_petitions(config))
    if errors:
        raise ConfigError("\n".join(where + line for line in errors))
    return config


def _check_petitions(config: Config) -> list[str]:
    p = config.petitions
    errors = []
    starts = [rule.valid_from for rule in p.rules]
    if len(set(starts)) != len(starts):
        errors.append("petitions.rules: two rules have the same valid_from")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(p.timezone)
    except Exception:
        if p.timezone != "Asia/Ho_Chi_Minh":  # known without tzdata: UTC+7, no DST since 1975
            errors.append(f"petitions.timezone: unknown time zone {p.timezone!r}")
    if p.holidays_file:
        path = config.base_dir / p.holidays_file
        try:
            p._file_holidays = read_holidays(path)
        except OSError as exc:
            errors.append(f"petitions.holidays_file: {path}: {exc.strerror}")
        except (ValueError, UnicodeDecodeError) as exc:
            errors.append(f"petitions.holidays_file: {path}: {exc}")
    return errors


def load(path: str | Path | None) -> Config:
    """Load and validate a config file; None means the embedded defaults."""
    if path is None:
        return from_dict({})
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, path)
