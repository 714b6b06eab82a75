"""What a ``probe check`` run is told: the configuration file, and options checked and typed.

``config.toml`` (:func:`config_path`; written by ``probe init``) holds the volunteer's consent
and their defaults; the CLI gives it to click as defaults, so flags win over the file and the
file over built-in defaults. :func:`check_config` validates every option and raises
:class:`~probe.errors.InputError` with a line for the user before anything is measured or
written.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..analysis.fingerprints import Fingerprints
from ..errors import ConfigError, InputError
from ..measure.control import (
    DEFAULT_CONTROL_RESOLVERS,
    DEFAULT_HELPER_CONCURRENCY,
    DEFAULT_HELPERS,
    OWN_HELPER_CONCURRENCY,
)
from ..measure.settings import Settings, Timeouts
from ..model import network
from ..net import resolvers
from ..net.connections import client_context

#: Targets measured at once by default (``--concurrency``).
CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Everything a run needs besides its targets and its database."""

    settings: Settings
    helpers: list[str]
    helper_concurrency: int
    fingerprints: Fingerprints
    concurrency: int = CONCURRENCY
    rate: float | None = None  # new network requests per second; None: unlimited
    probe_asn: str | None = None  # "AS8449"
    probe_cc: str | None = None  # "KG"
    #: Network-identity lookups (GET /whoami) asked before the helpers' own (measure.identity).
    whoami: tuple[str, ...] = ()
    max_runtime: float | None = None  # seconds; then no new target, and the run is "partial"

    def describe(self) -> dict[str, object]:
        """The settings stored with the run (JSON-able; nothing about the volunteer)."""
        return {
            "resolver": self.settings.system_resolver.url,
            "control_resolvers": [r.url for r in self.settings.control_resolvers],
            "helpers": self.helpers,
            "whoami": list(self.whoami),
            "timeouts": vars(self.settings.timeouts),
            "concurrency": self.concurrency,
            "rate": self.rate,
            "max_runtime": self.max_runtime,
        }


def parse_asn(value: str) -> str:
    """``"AS8449"`` from ``AS8449``, ``as8449`` or ``8449``; raises :class:`InputError`."""
    canonical = network.asn(value)
    if canonical is None:
        raise InputError(f"--probe-asn: {value!r} is not an AS number")
    return canonical


def parse_cc(value: str) -> str:
    """A two-letter country code, upper case; raises :class:`InputError`."""
    code = network.cc(value)
    if code is None:
        raise InputError(f"--probe-cc: {value!r} is not a two-letter country code")
    return code


def parse_helper_url(url: str, option: str = "--helper") -> str:
    """A test helper's URL (or another server's: ``option`` names it in errors), checked;
    raises :class:`InputError` saying what is wrong.

    It must be an ``http://`` or ``https://`` URL with a host, a port (if any) in 1..65535,
    no user name or password (a secret that would end up in the stored run settings), and no
    white space or control characters.
    """
    where = f"{option} {url!r}"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InputError(f"{where}: contains white space or control characters")
    if not url.lower().startswith(("http://", "https://")):
        raise InputError(f"{where}: must be an http:// or https:// URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced [ ] around an IPv6 address
        raise InputError(f"{where}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if "@" in parts.netloc:
        raise InputError(f"{where}: user names and passwords are not supported")
    if not parts.hostname:
        raise InputError(f"{where}: has no host")
    if port == 0:
        raise InputError(f"{where}: bad port (must be 1-65535)")
    return url


#: The longest a step may wait: past five minutes a step measures nothing (and ``inf`` never
#: ends, while ``nan`` makes every step time out at once: a run "offline" for nothing).
MAX_TIMEOUT = 300.0


def is_timeout(seconds: object) -> bool:
    """Whether ``seconds`` is a step timeout: a finite number, 0 < seconds <= MAX_TIMEOUT."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return False
    return math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT


def check_config(
    *,
    resolver: str | None = None,
    control_resolvers: Sequence[str] = (),
    helpers: Sequence[str] = (),
    helper_concurrency: int | None = None,
    ca_file: str | None = None,
    fingerprint_files: Sequence[str] = (),
    concurrency: int = CONCURRENCY,
    rate: float | None = None,
    probe_asn: str | None = None,
    probe_cc: str | None = None,
    timeouts: Timeouts | None = None,
    whoami: Sequence[str] = (),
    max_runtime: float | None = None,
) -> CheckConfig:
    """Validate a run's options; raises :class:`InputError` naming the option at fault."""
    asn = parse_asn(probe_asn) if probe_asn is not None else None
    cc = parse_cc(probe_cc) if probe_cc is not None else None
    system = (
        resolvers.parse_resolver(resolver, engine="system")
        if resolver
        else resolvers.system_resolver()
    )
    controls = [
        resolvers.parse_resolver(url) for url in (control_resolvers or DEFAULT_CONTROL_RESOLVERS)
    ]
    helper_urls = [parse_helper_url(url) for url in (helpers or DEFAULT_HELPERS)]
    timeouts = timeouts or Timeouts()
    for step, seconds in vars(timeouts).items():
        if not is_timeout(seconds):
            raise InputError(
                f"--{step}-timeout: {seconds!r} is not a number of seconds between 0 and "
                f"{MAX_TIMEOUT:g}"
            )
    for flag, value in (("--rate", rate), ("--max-runtime", max_runtime)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{flag}: {value!r} is not a finite number")
    if helper_concurrency is None:
        helper_concurrency = OWN_HELPER_CONCURRENCY if helpers else DEFAULT_HELPER_CONCURRENCY
    return CheckConfig(
        settings=Settings(
            system_resolver=system,
            control_resolvers=controls,
            ssl_context=client_context(ca_file),
            timeouts=timeouts,
        ),
        helpers=helper_urls,
        helper_concurrency=helper_concurrency,
        fingerprints=Fingerprints.load(extra_files=fingerprint_files),
        concurrency=concurrency,
        rate=rate,
        probe_asn=asn,
        probe_cc=cc,
        whoami=tuple(parse_helper_url(url, "--whoami") for url in whoami),
        max_runtime=max_runtime,
    )


# ------------------------------------------------------------------ the configuration file

#: Keys of config.toml that are no option of ``probe check``, and their types; every option
#: of ``probe check`` is a key too, by its name (:func:`probe.cli._group.config_keys`).
FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "consent": str,  # when the volunteer agreed (UTC); no measurement without it
    "vantage": str,  # a name for this vantage point, never an address
    "targets": list,  # target lists measured when `probe check` is given none
    "timeouts": dict,  # step -> seconds (the --STEP-timeout options)
    "collector": str,  # the collector's URL
    "collector_token": str,  # the volunteer's token from the collector's operator
}
#: Options whose key in config.toml is not their parameter's name.
OPTION_KEYS = {"fingerprint_files": "fingerprints", "as_json": "json", "inputs": "input"}
TIMEOUT_STEPS = ("dns", "tcp", "tls", "http", "control")

#: Keys of config.toml and the types of their values.
ConfigKeys = Mapping[str, type | tuple[type, ...]]


def config_path() -> Path:
    """``$PROBE_CONFIG``, else ``$XDG_CONFIG_HOME/probe/config.toml`` (``~/.config``)."""
    if os.environ.get("PROBE_CONFIG"):
        return Path(os.environ["PROBE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "probe" / "config.toml"


def data_dir() -> Path:
    """Where results live by default: ``$XDG_DATA_HOME/probe`` (``~/.local/share/probe``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "probe"


def default_db() -> Path:
    """The database used when neither ``--db``, ``$PROBE_DB`` nor the config names one."""
    return data_dir() / "probe.db"


def consent_text(db: Path) -> str:
    """What running a probe may expose the volunteer to, in plain words."""
    return f"""\
Before you measure, please read this.

* Your network operator, and anyone who watches your connection, can see that this computer
  connects to every site on your list, including sites that are blocked. In some countries
  visiting or testing blocked sites is against the law or draws attention: you know your
  situation best.
* For every site, probe asks a test helper outside your network (OONI's public helpers unless
  you name your own) to fetch the same site, and public DNS resolvers (Cloudflare, Google) for
  its address. They see your IP address, as any web server does.
* Results stay on this computer, in {db}: the sites, what your network and the control
  answered, and your network's AS number and country. probe never stores your IP address.
  Nothing is sent anywhere else unless you turn uploading on.
"""


def record_consent(
    db: Path, keys: ConfigKeys, targets: Sequence[Path] = (), path: Path | None = None
) -> Path:
    """Record consent now, keeping the rest of the file; the database and, when none are
    configured yet, the target lists of this first run are kept too (absolute, for cron)."""
    from ..model.records import utc_now

    values = load_config(keys, path)
    values["consent"] = utc_now()
    values.setdefault("db", str(db.resolve()))
    if targets and not values.get("targets"):
        values["targets"] = [str(Path(t).resolve()) for t in targets]
    return write_config(values, path)


def _line_of(text: str, key: str, table: str | None = None) -> int:
    """The line where ``key`` is set (in ``[table]``), for error messages; 0 when not found."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped.strip("[] ")
        elif current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return 0


def load_config(keys: ConfigKeys, path: Path | None = None) -> dict[str, Any]:
    """The configuration at ``path`` (default :func:`config_path`); {} when there is none.
    ``keys`` are the keys it may hold, with their types.

    Raises :class:`ConfigError` naming the file, the line and the key for malformed TOML,
    unknown keys and values of the wrong type.
    """
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key, value in data.items():
        where = f"{path}:{_line_of(text, key) or _line_of(text, key, key)}"
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}")
        expected = keys[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key!r} must be a list of strings")
    for step, seconds in (data.get("timeouts") or {}).items():
        where = f"{path}:{_line_of(text, step, 'timeouts')}"
        if step not in TIMEOUT_STEPS:
            raise ConfigError(f"{where}: unknown key 'timeouts.{step}'")
        if not is_timeout(seconds):
            raise ConfigError(
                f"{where}: 'timeouts.{step}' must be a positive number of seconds, at most "
                f"{MAX_TIMEOUT:g}"
            )
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string is JSON's
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(values: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``values`` as TOML (atomically, readable by the user only); returns the path."""
    path = path or config_path()
    lines = ["# probe's configuration (probe init). Flags given to probe win over this file."]
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for key, value in values.items():
        if key not in tables and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for table, entries in tables.items():
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in entries.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file may hold the collector token: it is created 0600 (mkstemp), never readable by
    # others even for a moment, under a new random name (no file planted there is followed).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def click_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as click's ``default_map`` for ``probe check`` (flags still win)."""
    names = {key: name for name, key in OPTION_KEYS.items()}
    check: dict[str, Any] = {}
    for key, value in config.items():
        if key in FILE_KEYS:
            continue
        check[names.get(key, key)] = value
    for step, seconds in (config.get("timeouts") or {}).items():
        check[f"{step}_timeout"] = float(seconds)
    return {"check": check}
