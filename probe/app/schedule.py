"""Scheduling unattended runs: a crontab line, or a systemd service and timer, for the current
configuration. Pure text; :func:`install_cron` and :func:`install_systemd` put it in place."""

from __future__ import annotations

import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import InputError

#: Marks our line in a crontab, so that installing again replaces it.
CRON_MARK = "# probe: measure website blocking"

_EVERY = re.compile(r"^(\d+)\s*([mhd])$")


def parse_every(text: str) -> tuple[int, str]:
    """``30m``, ``1h``, ``6h``, ``1d`` as (number, unit); raises :class:`InputError`."""
    match = _EVERY.match(text.strip().lower())
    if not match:
        raise InputError(f"--every {text!r}: expected e.g. 30m, 1h, 6h or 1d")
    number, unit = int(match.group(1)), match.group(2)
    limits = {"m": (5, 59), "h": (1, 23), "d": (1, 1)}
    low, high = limits[unit]
    if not low <= number <= high and not (unit == "h" and number == 24):
        raise InputError(f"--every {text!r}: between {low}{unit} and {high}{unit}")
    return (1, "d") if (number, unit) == (24, "h") else (number, unit)


def command(probe: str, config: Path | None) -> str:
    """The command a schedule runs: quiet, with the configuration named when not default."""
    env = f"PROBE_CONFIG={shlex.quote(str(config))} " if config else ""
    return f"{env}{probe} check --quiet"


def cron_line(every: str, probe: str, config: Path | None, rng: random.Random) -> str:
    """A crontab line; its minute (and hour) are random, so a fleet does not start at once."""
    number, unit = parse_every(every)
    minute = rng.randrange(number if unit == "m" else 60)
    if unit == "m":
        when = f"{minute}-59/{number} * * * *"
    elif unit == "h":
        when = f"{minute} */{number} * * *" if number > 1 else f"{minute} * * * *"
    else:
        when = f"{minute} {rng.randrange(24)} * * *"
    return f"{when} {command(probe, config)} {CRON_MARK}"


def systemd_units(every: str, probe: str, config: Path | None) -> dict[str, str]:
    """``probe.service`` and ``probe.timer`` (user units), the timer randomly delayed."""
    number, unit = parse_every(every)
    seconds = number * {"m": 60, "h": 3600, "d": 86400}[unit]
    calendar = {"m": f"*:00/{number}", "h": f"*-*-* 00/{number}:00:00", "d": "daily"}[unit]
    environment = f"Environment=PROBE_CONFIG={config}\n" if config else ""
    service = (
        "[Unit]\n"
        "Description=probe: measure website blocking\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{environment}"
        f"ExecStart={probe} check --quiet\n"
        # SIGTERM ends a run cleanly (marked interrupted); give it time to do so.
        "TimeoutStopSec=30\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=Run probe every {every}\n\n"
        "[Timer]\n"
        f"OnCalendar={calendar}\n"
        f"RandomizedDelaySec={max(60, seconds // 4)}s\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {"probe.service": service, "probe.timer": timer}


def probe_executable() -> str:
    """The ``probe`` command by its absolute path (cron's PATH is short): the one running now
    when it is the ``probe`` script, else the one on PATH, else this Python's ``-m probe``."""
    running = Path(sys.argv[0])
    if running.name == "probe" and running.is_file():
        return str(running.resolve())
    found = shutil.which("probe")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m probe"


def install_cron(line: str) -> None:
    """Replace our line in the user's crontab (or add it)."""
    if shutil.which("crontab") is None:
        raise InputError("crontab is not installed; print the line and add it by hand")
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    kept = [x for x in current.stdout.splitlines() if CRON_MARK not in x] if current.stdout else []
    new = "\n".join([*kept, line]) + "\n"
    subprocess.run(["crontab", "-"], input=new, text=True, check=True, capture_output=True)


def install_systemd(units: dict[str, str], directory: Path) -> list[str]:
    """Write the units into ``directory`` (~/.config/systemd/user) and enable the timer when
    systemctl can; the commands that still need running (none when it could)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (directory / name).write_text(text, encoding="utf-8")
    steps = [["systemctl", "--user", "daemon-reload"],
             ["systemctl", "--user", "enable", "--now", "probe.timer"]]  # fmt: skip
    for done, step in enumerate(steps):
        try:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):  # no systemctl, no user session
            return [" ".join(todo) for todo in steps[done:]]
    return []
