"""Reading files from an FTP drop (``ftp://user:password@host:port/path``).

The standard library's :mod:`ftplib` does the protocol. A dropped connection
is retried with exponential backoff and the transfer resumes from the last
byte received (``REST``), so a file arrives exactly once even when the
server hangs up mid-transfer.

>>> FtpLocation.parse("ftp://shop:secret@127.0.0.1:2121/drop/events.csv").path
'/drop/events.csv'
"""

from __future__ import annotations

import fnmatch
import ftplib
import io
import logging
import posixpath
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from transforms.errors import ConfigError, SourceError

__all__ = ["FtpLocation", "list_ftp", "read_ftp", "safe_join"]

_LOG = logging.getLogger(__name__)
_RETRYABLE = (ftplib.error_temp, ConnectionError, EOFError, socket.timeout, TimeoutError, OSError)


@dataclass(frozen=True)
class FtpLocation:
    host: str
    port: int
    user: str
    password: str
    path: str

    @classmethod
    def parse(cls, uri: str) -> "FtpLocation":
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme != "ftp" or not parts.hostname:
            raise ConfigError(f"not an FTP location: {redact(uri)!r}; expected ftp://user:password@host[:port]/path")
        path = urllib.parse.unquote(parts.path) or "/"
        return cls(
            host=parts.hostname,
            port=parts.port or 21,
            user=urllib.parse.unquote(parts.username or "anonymous"),
            password=urllib.parse.unquote(parts.password or ""),
            path=posixpath.normpath(path) if path != "/" else "/",
        )

    def with_path(self, path: str) -> str:
        user = urllib.parse.quote(self.user, safe="")
        auth = f"{user}:{urllib.parse.quote(self.password, safe='')}@" if self.password else f"{user}@"
        return f"ftp://{auth}{self.host}:{self.port}{urllib.parse.quote(path)}"


def redact(uri: str) -> str:
    """The URI with any password replaced, for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def safe_join(root: str, relative: str) -> str:
    """``root/relative`` for a name listed by a server, refusing names that escape ``root``."""
    joined = posixpath.normpath(posixpath.join(root, relative))
    if joined != root and not joined.startswith(root.rstrip("/") + "/"):
        raise SourceError(f"refusing FTP path {relative!r}: it escapes the folder {root!r}")
    return joined


def _connect(loc: FtpLocation, timeout_secs: float) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=timeout_secs)
    ftp.connect(loc.host, loc.port)
    ftp.login(loc.user, loc.password)
    ftp.voidcmd("TYPE I")
    return ftp


def _with_retries(what: str, fn: Callable[[], object], *, retries: int, backoff_secs: float, sleep=time.sleep):
    delay = backoff_secs
    for attempt in range(retries + 1):
        try:
            return fn()
        except ftplib.error_perm as exc:  # permanent: wrong path or credentials
            raise SourceError(f"{what}: {exc}") from exc
        except _RETRYABLE as exc:
            if attempt == retries:
                raise SourceError(f"{what}: failed after {retries + 1} attempts: {exc}") from exc
            _LOG.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def list_ftp(uri: str, *, retries: int = 4, backoff_secs: float = 0.5, timeout_secs: float = 30.0) -> list[str]:
    """The files matching an FTP URI, whose last path component may be a glob."""
    loc = FtpLocation.parse(uri)
    folder, pattern = posixpath.split(loc.path)
    if not any(ch in pattern for ch in "*?["):
        return [loc.with_path(loc.path)]

    def listing():
        ftp = _connect(loc, timeout_secs)
        try:
            return ftp.nlst(folder or "/")
        finally:
            _close(ftp)

    names = _with_retries(f"listing {redact(uri)}", listing, retries=retries, backoff_secs=backoff_secs)
    matched = sorted(
        safe_join(folder or "/", posixpath.basename(n)) for n in names if fnmatch.fnmatch(posixpath.basename(n), pattern)
    )
    return [loc.with_path(p) for p in matched]


def read_ftp(
    uri: str,
    *,
    retries: int = 4,
    backoff_secs: float = 0.5,
    timeout_secs: float = 30.0,
    max_bytes: int = 8 << 30,
    sleep=time.sleep,
) -> bytes:
    """The whole content of an FTP file, resuming after dropped connections."""
    loc = FtpLocation.parse(uri)
    buffer = io.BytesIO()
    delay = backoff_secs

    def append(block: bytes) -> None:
        buffer.write(block)
        if buffer.tell() > max_bytes:
            raise SourceError(f"{redact(uri)} is larger than max_bytes={max_bytes}")

    for attempt in range(retries + 1):
        ftp = None
        try:
            ftp = _connect(loc, timeout_secs)
            offset = buffer.tell()
            ftp.retrbinary(f"RETR {loc.path}", append, rest=offset or None)
            return buffer.getvalue()
        except ftplib.error_perm as exc:
            raise SourceError(f"reading {redact(uri)}: {exc}") from exc
        except _RETRYABLE as exc:
            if isinstance(exc, SourceError):
                raise
            if attempt == retries:
                raise SourceError(f"reading {redact(uri)}: failed after {retries + 1} attempts: {exc}") from exc
            _LOG.warning("reading %s: %s after %d bytes; resuming in %.1fs", redact(uri), exc, buffer.tell(), delay)
            sleep(delay)
            delay *= 2
        finally:
            if ftp is not None:
                _close(ftp)
    raise AssertionError("unreachable")


def _close(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except Exception:  # the connection may already be gone
        ftp.close()
