"""FTP drops against a real pyftpdlib server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from pipelines.ingest import run_ingest
from tests.conftest import SAMPLES, TESTDATA
from transforms.errors import SourceError
from transforms.ftp import list_ftp, read_ftp, redact, safe_join

pyftpdlib = pytest.importorskip("pyftpdlib")
from pyftpdlib.authorizers import DummyAuthorizer  # noqa: E402
from pyftpdlib.filesystems import AbstractedFS  # noqa: E402
from pyftpdlib.handlers import FTPHandler  # noqa: E402
from pyftpdlib.servers import FTPServer  # noqa: E402

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class _Truncating:
    """A file that hangs up the client's connection after ``limit`` bytes."""

    def __init__(self, f, limit, hang_up):
        self._f, self._left, self._hang_up = f, limit, hang_up
        self.name = f.name
        self.closed = False

    def read(self, n=-1):
        if self._left <= 0:
            self._hang_up()
            return b""
        data = self._f.read(min(n if n > 0 else self._left, self._left))
        self._left -= len(data)
        return data

    def seek(self, *args):
        return self._f.seek(*args)

    def close(self):
        self.closed = True
        self._f.close()


class DroppingFS(AbstractedFS):
    """Drops the connection during the first ``drops`` downloads."""

    drops = 0
    limit = 50_000

    def open(self, filename, mode):
        f = super().open(filename, mode)
        if "r" in mode and DroppingFS.drops > 0:
            DroppingFS.drops -= 1
            return _Truncating(f, DroppingFS.limit, self.cmd_channel.close)
        return f


@pytest.fixture
def ftp_server(tmp_path):
    root = tmp_path / "ftproot"
    (root / "drop").mkdir(parents=True)
    (root / "drop" / "day1.csv").write_bytes(SAMPLES.joinpath("retail", "online_retail_sample.csv").read_bytes())
    (root / "drop" / "day2.csv").write_bytes(TESTDATA.joinpath("ingest", "bad_and_good.csv").read_bytes())
    (root / "drop" / "notes.txt").write_text("not an input")
    auth = DummyAuthorizer()
    auth.add_user("shop", "s3cret", str(root), perm="elr")
    handler = type("Handler", (FTPHandler,), {"authorizer": auth, "abstracted_fs": DroppingFS, "passive_ports": None})
    server = FTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05, "handle_exit": False}, daemon=True)
    thread.start()
    DroppingFS.drops = 0
    yield f"ftp://shop:s3cret@127.0.0.1:{port}", root
    server.close_all()
    thread.join(timeout=5)


def test_read_whole_file(ftp_server):
    base, root = ftp_server
    assert read_ftp(f"{base}/drop/day1.csv") == (root / "drop" / "day1.csv").read_bytes()


def test_dropped_connection_resumes_and_data_arrives_once(ftp_server):
    base, root = ftp_server
    DroppingFS.drops = 2  # two hang-ups in a row, then a clean transfer
    sleeps = []
    data = read_ftp(f"{base}/drop/day1.csv", backoff_secs=0.01, sleep=sleeps.append)
    assert data == (root / "drop" / "day1.csv").read_bytes()
    assert sleeps == [0.01, 0.02]  # exponential backoff between the attempts


def test_gives_up_with_a_clear_error(ftp_server):
    base, _ = ftp_server
    DroppingFS.drops = 10
    with pytest.raises(SourceError, match=r"failed after 2 attempts") as err:
        read_ftp(f"{base}/drop/day1.csv", retries=1, backoff_secs=0.0, sleep=lambda s: None)
    assert "s3cret" not in str(err.value)


def test_missing_file_and_bad_login(ftp_server):
    base, _ = ftp_server
    with pytest.raises(SourceError, match="550"):
        read_ftp(f"{base}/drop/nope.csv", sleep=lambda s: None)
    with pytest.raises(SourceError, match="530"):
        read_ftp(base.replace("s3cret", "wrong") + "/drop/day1.csv", sleep=lambda s: None)


def test_glob_listing(ftp_server):
    base, _ = ftp_server
    assert [u.rsplit("/", 1)[1] for u in list_ftp(f"{base}/drop/*.csv")] == ["day1.csv", "day2.csv"]


def test_ingest_from_ftp_equals_local(ftp_server, tmp_path):
    base, root = ftp_server
    DroppingFS.drops = 1
    remote = run_ingest([f"{base}/drop/*.csv"], str(tmp_path / "ftp"), format="online-retail", now=NOW)
    local = run_ingest([str(root / "drop" / "*.csv")], str(tmp_path / "local"), format="online-retail", now=NOW)
    for key in ("read", "dead_letter", "duplicates", "outputs", "records"):
        assert remote[key] == local[key], key
    assert all("s3cret" not in u for u in remote["inputs"])


def test_paths_cannot_escape_and_passwords_are_redacted():
    assert safe_join("/drop", "day1.csv") == "/drop/day1.csv"
    with pytest.raises(SourceError, match="escapes"):
        safe_join("/drop", "../etc/passwd")
    assert redact("ftp://u:pw@h/x") == "ftp://u:***@h/x"
