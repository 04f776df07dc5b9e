"""Claims: who is running which run of a sweep, so that concurrent sweeps never run a run twice.

A claim is a small JSON file ``SWEEP/claims/NAME.json`` created atomically with ``O_CREAT | O_EXCL``: of two
processes that try at once exactly one gets it. It names its owner (host, pid, the pid's start time, a random
token) and carries a heartbeat timestamp that the owner refreshes (:class:`Heartbeat`) while it holds the claim.

A claim is *stale*, and may be taken over, when its owner is gone: the pid no longer exists on this host (or is
a different process that reused the pid), or the heartbeat is older than the timeout (owners on other hosts,
e.g. array jobs sharing the sweep folder over NFS). Take-over, heartbeat and release re-read the claim under an
``flock`` of ``claims/.lock``, so an owner never refreshes or deletes a claim that another process took over.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import files as _io
from ..errors import OutputError, RobustclipError

DEFAULT_TIMEOUT = 120.0
"""Seconds without a heartbeat after which a claim of another host counts as stale."""


def timeout_from_env() -> float:
    """The stale-claim timeout: ``$ROBUSTCLIP_CLAIM_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT`."""
    raw = os.environ.get("ROBUSTCLIP_CLAIM_TIMEOUT")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 and math.isfinite(value) else DEFAULT_TIMEOUT


def _pid_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return stat.rsplit(")", 1)[1].split()[19]
    except IndexError:
        return None


_HOST = socket.gethostname()


def owner() -> dict[str, Any]:
    """This process as a claim owner: host, pid, the pid's start time."""
    return {"host": _HOST, "pid": os.getpid(), "pid_start": _pid_start(os.getpid())}


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    now = _pid_start(pid)
    return start is None or now is None or now == start


def _refuse_odd(path: Path) -> None:
    """A folder, FIFO, socket or link where a claim file belongs: a one-line error (it would never go stale)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise RobustclipError(f"{path} is not a claim file (a folder, FIFO or link)",
                              "remove it; robustclip writes claims as small JSON files")


@dataclass
class Claim:
    """A claim this process holds."""

    path: Path
    token: str
    name: str


_SKEW = 300.0
"""Seconds a heartbeat may lie in the future (clock skew between hosts); beyond that it is ignored."""
_MAX_CLAIM_BYTES = 64 * 1024
"""A claim file is a few hundred bytes; a larger one is corrupt and is not read."""


def _read(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """(document, mtime) of a claim file; (None, mtime) when unreadable, too large or not a regular file (a FIFO
    is never opened: it would block); (None, None) when absent."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_CLAIM_BYTES:
            return None, st.st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError):
        return None, time.time()
    try:
        doc = json.loads(text)
    except ValueError:
        return None, st.st_mtime
    return (doc if isinstance(doc, dict) else None), st.st_mtime


def is_stale(doc: dict[str, Any] | None, mtime: float, timeout: float, now: float | None = None) -> bool:
    """Whether a claim document (``None``: unreadable, e.g. being written) no longer has a live owner."""
    now = time.time() if now is None else now
    beat = mtime
    if doc is not None:
        hb = doc.get("heartbeat")
        # a heartbeat from the future (a forged or corrupt claim: 1e18, inf) would never go stale: ignored
        if isinstance(hb, (int, float)) and not isinstance(hb, bool) and math.isfinite(hb) and hb <= now + _SKEW:
            beat = max(beat, float(hb))
        host, pid = doc.get("host"), doc.get("pid")
        if host == _HOST and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:  # 0, -1: groups
            return not _pid_alive(pid, doc.get("pid_start") if isinstance(doc.get("pid_start"), str) else None)
    return now - beat > timeout


class ClaimDir:
    """The claims of one sweep folder (``SWEEP/claims``)."""

    def __init__(self, folder: str | os.PathLike[str], timeout: float | None = None) -> None:
        self.dir = Path(folder)
        self.timeout = timeout_from_env() if timeout is None else timeout
        self._guard = threading.RLock()  # flock is per open file: serialise this process's threads too
        self._depth = 0

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (re-entrant within this process). A folder or lock file that cannot be created
        (a full disk, a read-only folder) is a one-line :class:`~robustclip.errors.OutputError`."""
        with self._guard:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as exc:
                from ..errors import OutputError

                raise OutputError(f"cannot lock sweep folder {self.dir.parent}: {exc.strerror or exc}",
                                  "free disk space or pick a writable folder") from None
            try:
                try:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX)
                except ImportError:  # pragma: no cover - not POSIX: the O_EXCL create still guards new claims
                    pass
                self._depth = 1
                yield
            finally:
                self._depth = 0
                os.close(fd)

    def _doc(self, name: str, token: str, started: float) -> dict[str, Any]:
        return {"claim": name, **owner(), "token": token, "started": started, "heartbeat": time.time()}

    def try_claim(self, name: str) -> Claim | None:
        """Claim ``name``; None when a live owner holds it. A stale claim is taken over."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        for _ in range(3):
            token = uuid.uuid4().hex
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                _refuse_odd(path)
                with self.locked():
                    doc, mtime = _read(path)
                    if mtime is None:
                        continue  # released meanwhile: try again
                    if not is_stale(doc, mtime, self.timeout):
                        return None
                    path.unlink(missing_ok=True)  # a dead owner's claim
                continue
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self._doc(name, token, time.time()), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:  # a full disk: no half-written claim stays to block other sweeps
                path.unlink(missing_ok=True)
                raise OutputError(f"cannot write claim {path}: {exc.strerror or exc}",
                                  "free disk space, then run the sweep again (it resumes)") from None
            return Claim(path, token, name)
        return None

    def owns(self, claim: Claim) -> bool:
        """Whether ``claim`` is still this process's (not taken over after it looked stale)."""
        doc, _ = _read(claim.path)
        return doc is not None and doc.get("token") == claim.token

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's heartbeat; False when it is no longer ours."""
        with self.locked():
            doc, _ = _read(claim.path)
            if doc is None or doc.get("token") != claim.token:
                return False
            doc["heartbeat"] = time.time()
            _io.write_json(claim.path, doc)
            return True

    def release(self, claim: Claim) -> None:
        """Delete the claim if it is still ours."""
        with self.locked():
            doc, _ = _read(claim.path)
            if doc is not None and doc.get("token") == claim.token:
                claim.path.unlink(missing_ok=True)

    def holder(self, name: str) -> dict[str, Any] | None:
        """The live owner of claim ``name`` (its document), else None."""
        doc, mtime = _read(self.path(name))
        if mtime is None or is_stale(doc, mtime, self.timeout):
            return None
        return doc or {"host": "?", "pid": "?"}

    def remove_stale(self) -> list[str]:
        """Delete every stale claim (e.g. of a killed sweep) and leftover temporary files; return their names."""
        gone = []
        with self.locked():
            for p in sorted(self.dir.glob("*.json")):
                doc, mtime = _read(p)
                if not p.is_file() or p.is_symlink():
                    continue  # not a claim (a folder, FIFO or link): refused when its run is claimed
                if mtime is not None and is_stale(doc, mtime, self.timeout):
                    p.unlink(missing_ok=True)
                    gone.append(p.name[: -len(".json")])
        return gone

    def live(self, prefix: str = "", exclude: set[str] | None = None) -> list[str]:
        """Names of the live claims starting with ``prefix`` (except tokens in ``exclude``)."""
        out = []
        for p in sorted(self.dir.glob(f"{prefix}*.json")) if self.dir.is_dir() else []:
            doc, mtime = _read(p)
            if mtime is None or is_stale(doc, mtime, self.timeout):
                continue
            if exclude and doc is not None and doc.get("token") in exclude:
                continue
            out.append(p.name[: -len(".json")])
        return out


class Heartbeat:
    """A daemon thread that refreshes the heartbeat of every claim this process holds."""

    def __init__(self, claims: ClaimDir, interval: float | None = None) -> None:
        self.claims = claims
        self.interval = interval if interval is not None else max(0.2, claims.timeout / 4)
        self.held: dict[str, Claim] = {}
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="robustclip-claims", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            held = list(self.held.values())
            self.held.clear()
        for c in held:
            with contextlib.suppress(OSError):
                self.claims.release(c)

    def add(self, claim: Claim) -> None:
        with self._lock:
            self.held[claim.name] = claim

    def release(self, claim: Claim) -> None:
        with self._lock:
            self.held.pop(claim.name, None)
        self.claims.release(claim)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self.held.values())
            for c in held:
                try:
                    if not self.claims.heartbeat(c):
                        with self._lock:
                            self.lost.add(c.name)
                except OSError:
                    pass  # a transient error on a shared folder: try again next beat
