"""Security checks: no unpickling of user files, no credentials in code or logs, verified models, size limits.

* a scan of the repository's Python for deserialisers that run code
  (pickle, dill, joblib, cloudpickle, marshal, shelve, ``torch.load``
  without ``weights_only=True``, ``np.load(allow_pickle=True)``, unsafe
  YAML, Keras ``safe_mode=False``, ``trust_remote_code``); the allow-list
  below must say why each remaining use is safe;
* simple secret patterns over every tracked file;
* an FTP ingest against a real local server: its password appears in no
  log line, summary or output file;
* a tampered registry model stops a job before it loads;
* image and text size limits exist and are enforced.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import re
import subprocess

import pytest

from tests.conftest import ROOT, TESTDATA
from tests.test_ftp import DroppingFS, ftp_server  # noqa: F401  (the real pyftpdlib server fixture)
from transforms.errors import ChecksumMismatch

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


# ---------------------------------------------------------------------------
# deserialisation
# ---------------------------------------------------------------------------

UNSAFE_LOADS = {
    "pickle": re.compile(r"\b(c?pickle|_pickle)\.(load|loads|Unpickler)\b"),
    "dill": re.compile(r"\bdill\.(load|loads)\b|^\s*(import|from)\s+dill\b", re.M),
    "joblib": re.compile(r"\bjoblib\.load\b|^\s*from\s+joblib\s+import\s+.*\bload\b", re.M),
    "cloudpickle": re.compile(r"\bcloudpickle\.(load|loads)\b"),
    "marshal": re.compile(r"\bmarshal\.(load|loads)\b"),
    "shelve": re.compile(r"\bshelve\.open\b"),
    "pandas pickle": re.compile(r"\bread_pickle\b"),
    "numpy pickle": re.compile(r"\b(np|numpy)\.load\([^)]*allow_pickle\s*=\s*True"),
    "torch.load": re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"),
    "yaml.load": re.compile(r"\byaml\.(load|load_all)\((?![^)]*SafeLoader)[^)]*\)"),
    "keras unsafe": re.compile(r"safe_mode\s*=\s*False"),
    "remote code": re.compile(r"trust_remote_code\s*=\s*True"),
}
# (path, kind) -> why the use is safe. Registry-only uses must verify the checksum before loading
# (components.registry resolves and verifies; transforms.inference.read_model_bytes(sha256=...) checks bytes).
# Empty today: every model loads from ONNX, SavedModel, TFLite, safetensors or a plain .npy.
ALLOWED: dict[tuple[str, str], str] = {}
SELF = "tests/test_security.py"  # names the patterns, in examples too


def test_no_unpickling_of_files():
    found = []
    for path in tracked("*.py"):
        if path == SELF:
            continue
        text = (ROOT / path).read_text(encoding="utf-8")
        for kind, pattern in UNSAFE_LOADS.items():
            for m in pattern.finditer(text):
                if (path, kind) not in ALLOWED:
                    line = text.count("\n", 0, m.start()) + 1
                    found.append(f"{path}:{line}: {kind}: {m.group(0)[:80]}")
    assert not found, "code-running deserialisation (load ONNX/SavedModel/safetensors instead, or justify it in ALLOWED):\n" + "\n".join(found)
    for (path, kind), why in ALLOWED.items():  # the allow-list holds no stale entries
        assert (ROOT / path).exists() and UNSAFE_LOADS[kind].search((ROOT / path).read_text()), (path, kind)
        assert len(why.split()) >= 4


def test_the_scan_catches_what_it_should():
    hits = {
        "pickle": "data = pickle.load(open(p, 'rb'))",
        "torch.load": "state = torch.load(path)",
        "numpy pickle": "x = np.load(f, allow_pickle=True)",
        "joblib": "model = joblib.load('m.pkl')",
        "yaml.load": "cfg = yaml.load(text)",
    }
    for kind, line in hits.items():
        assert UNSAFE_LOADS[kind].search(line), kind
    assert not UNSAFE_LOADS["torch.load"].search("torch.load(path, weights_only=True)")
    assert not UNSAFE_LOADS["numpy pickle"].search("np.load(f, allow_pickle=False)")
    assert not UNSAFE_LOADS["pickle"].search("len(pickle.dumps(table))")


# ---------------------------------------------------------------------------
# credentials in code
# ---------------------------------------------------------------------------

SECRETS = {
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key": re.compile(r"\"private_key(_id)?\"\s*:\s*\"[^\"]{8,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "Slack token": re.compile(r"\bxox[baprs]-[0-9A-Za-z-]{10,}"),
    "assigned secret": re.compile(
        r"(?i)\b[a-z_]*(passw(or)?d|secret|token|api[_-]?key|client[_-]?secret)\s*[=:]\s*[\"'][^\"'\s{}$<>]{8,}[\"']"
    ),
    "URL with password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^/\s:@'\"]+)@"),
}
# Passwords in URLs that are placeholders or belong to the throw-away local test server.
PLACEHOLDER_PASSWORDS = {"pass", "password", "pw", "secret", "s3cret", "***", "wrong"}


def test_no_credentials_in_tracked_files():
    found = []
    for path in tracked():
        if path == SELF:
            continue
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary fixtures (images, Parquet)
        for name, pattern in SECRETS.items():
            for m in pattern.finditer(text):
                if name == "URL with password" and (m.group(1) in PLACEHOLDER_PASSWORDS or "{" in m.group(1)):
                    continue
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path}:{line}: {name}")
    assert not found, "\n".join(found)


def test_secret_patterns_work():
    fake_key = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert SECRETS["AWS access key"].search(f"key = '{fake_key}'")
    assert SECRETS["assigned secret"].search("db_pass" + "word = 'hunter2" + "hunter2'")
    assert not SECRETS["assigned secret"].search("password = os.environ['PW']")
    m = SECRETS["URL with password"].search("ftp://shop:" + "Tr0ub4dor@host/x")
    assert m and m.group(1) == "Tr0ub4dor"


# ---------------------------------------------------------------------------
# FTP password never in logs, summaries or outputs
# ---------------------------------------------------------------------------


def _assert_no_password(password: str, caplog, capfd, out) -> None:
    assert password not in caplog.text
    captured = capfd.readouterr()
    assert password not in captured.out and password not in captured.err
    for path in out.rglob("*"):
        if path.suffix == ".parquet":  # compressed pages: look at the values
            import pyarrow.parquet as pq

            assert password not in repr(pq.read_table(path).to_pylist()), path
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_ftp_password_not_in_logs_summary_or_outputs(ftp_server, tmp_path, caplog, capfd):  # noqa: F811
    from pipelines.ingest import run_ingest

    base, root = ftp_server
    password = "s3cret"
    assert f":{password}@" in base
    DroppingFS.drops = 1  # one dropped transfer: the retry is logged
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    summary = run_ingest([f"{base}/drop/*.csv"], str(out), format="online-retail", now=NOW, retail_json=True)
    assert summary["dead_letter"] > 0  # bad_and_good.csv: dead letters name their source file
    assert "retrying" in caplog.text or "resuming" in caplog.text  # the retry was logged, without the password
    _assert_no_password(password, caplog, capfd, out)
    assert all(":***@" in u for u in summary["inputs"])


def test_ftp_password_not_in_unreadable_file_dead_letter(ftp_server, tmp_path, caplog, capfd):  # noqa: F811
    from pipelines.ingest import run_ingest

    base, root = ftp_server
    whole = gzip.compress(TESTDATA.joinpath("ingest", "bad_and_good.csv").read_bytes())
    (root / "drop" / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    summary = run_ingest([f"{base}/drop/cut.csv.gz"], str(out), format="online-retail", now=NOW)
    assert summary["reasons"] == {"UNREADABLE_FILE": 1}
    _assert_no_password("s3cret", caplog, capfd, out)


# ---------------------------------------------------------------------------
# registry models verified before load
# ---------------------------------------------------------------------------


def test_tampered_registry_model_stops_recommend_before_loading(tmp_path):
    from components.registry import LocalRegistry
    from pipelines.recommend import run

    src = tmp_path / "model"
    (src / "saved_model").mkdir(parents=True)
    (src / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01" * 64)
    (src / "vocab.json").write_text('{"ids": ["a"], "counts": [1]}')
    registry = LocalRegistry(tmp_path / "registry")
    version = registry.register("recommender", src, framework="tensorflow", aliases=("production",))
    (tmp_path / "registry" / "recommender" / "v1" / "vocab.json").write_text('{"ids": ["evil"], "counts": [1]}')
    with pytest.raises(ChecksumMismatch, match=r"recommender@v1: checksum mismatch for file 'vocab.json'"):
        run(events=str(tmp_path / "no-events"), catalog=None, out_dir=str(tmp_path / "out"),
            model_dir="registry://recommender@production", registry=registry, echo=lambda *_: None)
    assert version.path.endswith("v1") and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# size limits
# ---------------------------------------------------------------------------


def test_image_limits_exist_and_are_enforced(tmp_path):
    import numpy as np

    from pipelines.enrich import ImageRef, LoadImage
    from tests.test_bad_input import png_header
    from transforms.inference.ocr import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, ImageError, OcrModelHandler, decode_image

    assert 0 < DEFAULT_MAX_IMAGE_PIXELS <= 100_000_000 and 0 < DEFAULT_MAX_IMAGE_BYTES <= 100 * 2**20
    with pytest.raises(ImageError, match="decompression bomb") as e:  # 74 bytes, 2.5 gigapixels: never decoded
        decode_image(png_header(50_000, 50_000))
    assert e.value.reason == "IMAGE_TOO_LARGE"
    with pytest.raises(ImageError) as e:
        OcrModelHandler(None, max_image_pixels=100)._as_image(np.zeros((20, 20, 3), np.uint8))
    assert e.value.reason == "IMAGE_TOO_LARGE"
    big = tmp_path / "big.png"
    big.write_bytes(png_header(10, 10) + b"\x00" * 5000)
    (out,) = list(LoadImage(max_pixels=10**6, max_bytes=1000).process(ImageRef("p", str(big), 0)))
    assert out.tag == "dead_letter" and out.value["reason"] == "IMAGE_TOO_LARGE"  # refused before reading


def test_text_limits_exist_and_are_enforced():
    from transforms.inference.ner import NerModelHandler
    from transforms.ner_enrich import _ProductBatches
    from transforms.records import Product
    from transforms.retail_json import MAX_RECORD_BYTES, iter_jsonl
    from transforms.validation import LIMITS

    assert MAX_RECORD_BYTES <= 16 << 20 and LIMITS.title_chars and LIMITS.description_chars
    ((_, _, problem),) = list(iter_jsonl(b'{"id": "' + b"x" * 64 + b'"}\n', 0, max_record_bytes=32))
    assert problem.reason == "RECORD_TOO_LARGE"
    # NER: texts over max_chars become dead letters; the default takes any valid catalog text whole
    assert NerModelHandler("unused")._max_chars >= LIMITS.description_chars
    check = _ProductBatches(max_chars=50, batch_texts=8)
    product = Product(id="p1", title="word " * 10, description="word " * 11)
    dead, (work,) = list(check.process((0, [("product", "p1", product)])))
    assert dead.tag == "invalid" and dead.value.reason == "NER_TEXT_TOO_LONG" and "max_chars=50" in dead.value.detail
    assert dead.value.source_format == "ner:description"
    assert work.fields == ("title",) and work.texts() == ["word " * 10]


class _EndlessFile:
    """A file that reports no size and never ends (a catalog image uri of /dev/zero, a pipe, a growing object)."""

    unbounded_reads = 0

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.limit_bytes + 1:
            _EndlessFile.unbounded_reads += 1
            raise MemoryError("read without a size bound on an endless file")
        return b"\x00" * n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_image_read_is_bounded_even_when_the_size_lies(monkeypatch):
    import pipelines.enrich as enrich
    from pipelines.enrich import ImageRef, LoadImage

    class _Meta:
        size_in_bytes = 0

    class _Match:
        metadata_list = [_Meta()]

    monkeypatch.setattr(enrich.FileSystems, "match", staticmethod(lambda patterns: [_Match()]))
    monkeypatch.setattr(enrich.FileSystems, "open", staticmethod(lambda path, *a, **k: _EndlessFile(1000)))
    _EndlessFile.unbounded_reads = 0
    (out,) = list(LoadImage(max_pixels=10**6, max_bytes=1000).process(ImageRef("p", "/dev/zero", 0)))
    assert _EndlessFile.unbounded_reads == 0
    assert out.tag == "dead_letter" and out.value["reason"] == "IMAGE_TOO_LARGE"
