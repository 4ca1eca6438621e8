"""The home's log: one JSON object per line in ``HOME/logs/swarm.log``, rotated.

``swarm up`` writes it (INFO and above, whatever ``-v`` shows on the terminal); ``swarm logs``
reads it. Rotation keeps ``BACKUPS`` older files of at most ``MAX_BYTES`` each, so the log never
takes more than 20 MB. The files are the user's alone (0600 in a 0700 directory). What goes in is
what the code logs: device names and ids, addresses, counts and reasons, never a key, an invite
code or a vault value (a test greps the log of a working peer for the values it wrote).
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOG_DIR = "logs"
LOG_NAME = "swarm.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_path(home: Path) -> Path:
    return home / LOG_DIR / LOG_NAME


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose files are created 0600, whatever the umask."""

    previous_root_level: int = logging.NOTSET

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding="utf-8")


def open_log(home: Path, level: int = logging.INFO) -> logging.Handler:
    """Attach the home's log to the root logger; returns the handler (remove it when done)."""
    directory = home / LOG_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    handler = _PrivateRotatingFile(
        log_path(home), maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=False
    )
    handler.setFormatter(JsonLines())
    handler.setLevel(level)
    root = logging.getLogger()
    handler.previous_root_level = root.level
    if root.level > level:
        # the terminal's handler keeps showing what it showed (`-v`), the file gets ``level``
        for other in root.handlers:
            if other.level == logging.NOTSET:
                other.setLevel(root.level)
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def close_log(handler: logging.Handler) -> None:
    """Detach what ``open_log`` attached, and put the root logger's level back."""
    root = logging.getLogger()
    root.removeHandler(handler)
    handler.close()
    previous = getattr(handler, "previous_root_level", None)
    if previous is not None:
        root.setLevel(previous)


@dataclass(frozen=True, slots=True)
class Entry:
    t: float
    level: str
    logger: str
    msg: str
    exc: str | None = None

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.t))
        text = f"{stamp} {self.level:<7} {self.logger}: {self.msg}"
        return text + ("\n" + self.exc if self.exc else "")

    def to_json(self) -> dict[str, Any]:
        out = {"t": self.t, "level": self.level, "logger": self.logger, "msg": self.msg}
        return out | ({"exc": self.exc} if self.exc else {})


def parse_line(line: str) -> Entry | None:
    """One line of the log, or None for a line that is not ours (a torn write, an edit)."""
    try:
        data = json.loads(line)
        return Entry(
            float(data["t"]),
            str(data["level"]),
            str(data["logger"]),
            str(data["msg"]),
            None if data.get("exc") is None else str(data["exc"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_log(home: Path, *, level: str = "DEBUG") -> Iterator[Entry]:
    """Every entry at ``level`` or above, oldest first, across the rotated files."""
    floor = LEVELS.index(level)
    path = log_path(home)
    for n in range(BACKUPS, -1, -1):
        part = path if n == 0 else path.with_name(f"{LOG_NAME}.{n}")
        try:
            with part.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    entry = parse_line(line)
                    if entry is not None and _at_least(entry.level, floor):
                        yield entry
        except FileNotFoundError:
            continue


def follow_log(home: Path, *, level: str = "DEBUG", poll_s: float = 0.5) -> Iterator[Entry]:
    """New entries as they are written (across a rotation), until the caller stops."""
    floor = LEVELS.index(level)
    path = log_path(home)
    f: IO[bytes] | None = None
    inode = None
    pending = b""
    first = True
    try:
        while True:
            if f is None:
                try:
                    f = path.open("rb")
                except FileNotFoundError:
                    first = False  # when it appears, all of it is new
                    time.sleep(poll_s)
                    continue
                inode = os.fstat(f.fileno()).st_ino
                if first:  # only what comes next; after a rotation, the new file whole
                    f.seek(0, os.SEEK_END)
                    first = False
                pending = b""
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    entry = parse_line(pending.decode("utf-8", "replace"))
                    pending = b""
                    if entry is not None and _at_least(entry.level, floor):
                        yield entry
                continue
            try:
                rotated = os.stat(path).st_ino != inode
            except FileNotFoundError:
                rotated = True
            if rotated:  # the rest of the old file was read above
                f.close()
                f = None
                first = False
                continue
            time.sleep(poll_s)
    finally:
        if f is not None:
            f.close()


def _at_least(level: str, floor: int) -> bool:
    return level in LEVELS and LEVELS.index(level) >= floor


__all__ = [
    "LEVELS",
    "Entry",
    "close_log",
    "follow_log",
    "log_path",
    "open_log",
    "parse_line",
    "read_log",
]
