"""Checked downloads: one file from a list of mirrors, resumable, retried, MD5-verified and renamed into place.

The bytes go to ``<target>.part`` next to the target. An interrupted download keeps that partial file, and the
next attempt asks the server for the rest (an HTTP ``Range`` request); a server that ignores the range sends the
whole file again and the partial file is restarted. Only a complete file whose MD5 matches the published digest is
renamed onto the target (``os.replace``, atomic), so the target is either absent or whole and verified. A file
that fails its checksum is deleted, never kept.

The partial file is opened with ``O_NOFOLLOW`` and must be a regular file: a link planted in its place is refused,
never written through. A mirror that trickles (fewer than :data:`MIN_BYTES_PER_WINDOW` bytes in any
:data:`RATE_WINDOW_S` seconds) is dropped like one that breaks off, so a download never hangs for ever.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import DataError

CHUNK = 1 << 16
RETRIES = 3
"""Attempts per mirror (a failed attempt resumes where the last one stopped)."""
BACKOFF_S = 1.0
"""Wait before the second attempt, doubled for each further one (tests set it to 0)."""
TIMEOUT_S = 30.0
"""Socket timeout of each request, in seconds."""
RATE_WINDOW_S = 60.0
"""Seconds over which a transfer's progress is judged (tests shorten it)."""
MIN_BYTES_PER_WINDOW = 64 * 1024
"""Fewer bytes than this in a :data:`RATE_WINDOW_S` window ends the attempt as too slow (about 1 KiB/s)."""


class TooSlow(OSError):
    """A mirror sent too little for too long; the attempt ends (and may resume later) instead of hanging."""


def _open_part(part: Path, resume: bool) -> BinaryIO:
    """``part`` opened for writing, never through a link: ``O_NOFOLLOW``, and only a regular file (or a new one)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError:
        if os.path.islink(part):
            raise DataError(f"{part} is a symbolic link; a download is never written through a link",
                            "remove the link and run again") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{part} is not a regular file (a FIFO or device)", "remove it and run again")
    os.set_blocking(fd, True)
    fh = os.fdopen(fd, "r+b")
    if not resume:
        fh.truncate(0)
    return fh

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def md5_file(path: Path) -> str:
    """The hex MD5 of the file at ``path``, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def part_path(target: Path) -> Path:
    """Where the partial download of ``target`` is kept between attempts."""
    return target.with_name(target.name + ".part")


def _transfer(url: str, part: Path, *, max_bytes: int, desc: str, progress: bool) -> None:
    """One request for ``url``: append the rest of the file to ``part`` (or restart it when the server sends the
    whole file). Raises OSError / HTTPException on network trouble and DataError when the server sends too much."""
    from ..core.progress import bar as progress_bar

    try:
        st = os.lstat(part)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DataError(f"{part} is {'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a regular file'}; "
                        "a download is never written through it", "remove it and run again")
    have = st.st_size if st is not None else 0
    req = urllib.request.Request(url, headers={"User-Agent": "robustclip"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at or past the end: the partial file is not a prefix
            part.unlink()
        raise
    with resp:
        start = 0
        if resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink(missing_ok=True)  # not the range asked for: start over on the next attempt
                raise http.client.HTTPException(f"{url}: the server answered the resume request with another range")
            start = have
        length = int(resp.headers.get("Content-Length") or 0) or None
        total = start + length if length else None
        if total is not None and total > max_bytes:
            raise DataError(f"{url} is {total:,} bytes, more than the {max_bytes:,} expected",
                            "check the mirror; it does not serve the official file")
        with _open_part(part, resume=bool(start)) as fh, \
                progress_bar(total=total, initial=start, enabled=progress, unit="B", unit_scale=True, desc=desc,
                             leave=False) as bar:
            fh.seek(start)
            fh.truncate()
            written = start
            window_start, window_bytes = time.monotonic(), 0
            for chunk in iter(lambda: resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK), b""):
                written += len(chunk)
                if written > max_bytes:
                    raise DataError(f"{url} sent more than the {max_bytes:,} bytes expected",
                                    "check the mirror; it does not serve the official file")
                fh.write(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start >= RATE_WINDOW_S:
                    if window_bytes < MIN_BYTES_PER_WINDOW:
                        raise TooSlow(f"sent {window_bytes:,} bytes in {now - window_start:.0f} s, too slow")
                    window_start, window_bytes = now, 0
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and written < total:
            raise http.client.IncompleteRead(b"", total - written)


def fetch(urls: Sequence[str], target: Path, *, md5: str, max_bytes: int, desc: str | None = None,
          progress: bool = True) -> Path:
    """Download ``target`` from the first of ``urls`` that serves a file with MD5 ``md5``; return ``target``.

    Each mirror gets :data:`RETRIES` attempts; an attempt after a broken transfer resumes from the bytes already
    in ``<target>.part``. ``max_bytes`` bounds what a server may send. Raises :class:`DataError` naming every
    failure when no mirror delivers the verified file; a file with the wrong checksum is deleted.
    """
    target = Path(target)
    part = part_path(target)
    for p in (target, part):  # checked before any network: a link or FIFO there is a local problem
        if os.path.lexists(p) and (os.path.islink(p) or not os.path.isfile(p)):
            raise DataError(f"{p} is {'a symbolic link' if os.path.islink(p) else 'not a regular file'}; a "
                            "download is never written through it", "remove it and run again")
    if target.is_file() and md5_file(target) == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for url in urls:
        for attempt in range(RETRIES):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                _transfer(url, part, max_bytes=max_bytes, desc=desc or target.name, progress=progress)
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{url}: {_reason(exc)}")
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                    break  # the mirror does not have the file: retrying will not help
                continue
            except DataError as exc:
                if os.path.lexists(part) and not os.path.islink(part) and os.path.isfile(part):
                    part.unlink()  # never a link planted there (nor what it points to)
                errors.append(exc.problem)
                break
            got = md5_file(part)
            if got != md5:
                part.unlink()  # a resumed file may hold a stale prefix: the next attempt starts from zero
                errors.append(f"{url}: MD5 {got} does not match the published {md5}")
                continue
            os.replace(part, target)
            return target
    raise DataError(f"could not download {target.name}: " + " | ".join(errors[-4:]),
                    "check the network (or put the file in the data folder by hand)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the end of the file (will resume)"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
