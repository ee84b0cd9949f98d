"""The OCR half of ``aisle enrich`` on the bundled grocery product images."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.enrich import OCR_LINES_SCHEMA, OCR_TEXT_SCHEMA, catalog_files, image_refs, run_enrich
from tests.conftest import SAMPLES
from transforms.errors import SourceError
from transforms.records import DEAD_LETTER_SCHEMA


@pytest.fixture(scope="module")
def enriched(tmp_path_factory):
    """Sample catalog plus a corrupt, a missing and an oversized image, enriched once."""
    root = tmp_path_factory.mktemp("catalog")
    shutil.copytree(SAMPLES / "images", root / "images")
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.new("RGB", (4000, 3000), "white").save(root / "images" / "huge.png")
    lines = (SAMPLES / "catalog_images.jsonl").read_text().splitlines()
    lines.append(json.dumps({"id": "bad-1", "title": "Corrupt", "images": [{"uri": "images/corrupt.jpg"}, {"uri": "images/missing.jpg"}]}))
    lines.append(json.dumps({"id": "bad-2", "title": "Huge", "images": [{"uri": str(root / "images" / "huge.png")}]}))
    lines.append(json.dumps({"id": "no-image", "title": "No image"}))
    (root / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("out")
    summary = run_enrich(str(root / "catalog.jsonl"), str(out), threads=1, batch_size=4, max_image_pixels=10_000_000)
    return out, summary


def test_every_image_accounted_for(enriched):
    _, summary = enriched
    assert summary["read"] == 10  # 7 samples + corrupt + missing + huge (a product without images has none)
    assert summary["outputs"] == {"ocr_images": 7}
    assert summary["dead_letter"] == 3
    assert summary["reasons"] == {"IMAGE_DECODE_ERROR": 1, "IMAGE_NOT_FOUND": 1, "IMAGE_TOO_LARGE": 1}
    assert summary["conservation"]["ok"]


def test_output_schemas_and_content(enriched):
    out, _ = enriched
    lines = pq.read_table(out / "ocr_lines")
    text = pq.read_table(out / "ocr_text")
    dead = pq.read_table(out / "dead_letter_ocr")
    assert lines.schema.equals(OCR_LINES_SCHEMA)
    assert text.schema.equals(OCR_TEXT_SCHEMA)
    assert dead.schema.equals(DEAD_LETTER_SCHEMA)
    by_id = {r["product_id"]: r for r in text.to_pylist()}
    assert set(by_id) == {
        "arla-natural-yoghurt", "alpro-shelf-soy-milk", "tropicana-juice-smooth", "oatly-oat-milk",
        "god-morgon-orange-juice", "yoggi-strawberry-yoghurt", "banana",
    }
    # brand names printed large on the packs
    assert "TROPICANA" in by_id["tropicana-juice-smooth"]["text"].upper()
    assert "ARLA" in by_id["arla-natural-yoghurt"]["text"].upper()
    assert "ALPRO" in by_id["alpro-shelf-soy-milk"]["text"].upper()
    assert by_id["banana"]["n_lines"] == 0 and by_id["banana"]["text"] == ""
    rows = lines.to_pylist()
    for pid, r in by_id.items():
        mine = sorted((x for x in rows if x["product_id"] == pid), key=lambda x: x["line_index"])
        assert r["n_lines"] == len(mine)
        assert r["text"] == "\n".join(x["text"] for x in mine)
        assert [x["line_index"] for x in mine] == list(range(len(mine)))
    for x in rows:
        assert len(x["box"]) == 4 and x["angle"] in (0, 90, 180, 270) and 0 < x["confidence"] <= 1
        assert x["image_uri"].endswith(".jpg")
    dl = {r["reason"]: r for r in dead.to_pylist()}
    assert dl["IMAGE_NOT_FOUND"]["source_file"].endswith("missing.jpg")
    assert json.loads(dl["IMAGE_DECODE_ERROR"]["raw"])["product_id"] == "bad-1"
    assert "4000x3000" in dl["IMAGE_TOO_LARGE"]["detail"]


def test_rerun_replaces_output(enriched, tmp_path):
    out, _ = enriched
    before = pq.read_table(out / "ocr_text").to_pylist()
    run_enrich(str(SAMPLES / "catalog_images.jsonl"), str(out), threads=1)
    after = pq.read_table(out / "ocr_text").to_pylist()
    assert {r["product_id"] for r in after} == {r["product_id"] for r in before}
    assert not pq.read_table(out / "dead_letter_ocr").num_rows  # the previous run's dead letters are gone
    assert not [p for p in out.iterdir() if p.name.startswith("_staging")]


def test_catalog_forms(tmp_path):
    files, root = catalog_files(str(SAMPLES / "catalog_images.jsonl"))
    assert files == [str(SAMPLES / "catalog_images.jsonl")] and root == str(SAMPLES)
    refs = [r for f in files for r in image_refs(f, root)]
    assert len(refs) == 7 and all(r.uri.startswith(str(SAMPLES / "images")) for r in refs)
    with pytest.raises(SourceError, match="no products found"):
        catalog_files(str(tmp_path))
    # an ingest output folder: <dir>/products/*.parquet with PRODUCT_SCHEMA
    from transforms.records import Image as Img, Product, to_arrow
    from transforms.io import write_parquet

    table = to_arrow([Product(id="x1", title="X", images=(Img(uri="images/Banana_Iconic.jpg"),))], Product)
    write_parquet(table, str(tmp_path / "products" / "part-0.parquet"))
    files, root = catalog_files(str(tmp_path))
    refs = [r for f in files for r in image_refs(f, root)]
    assert refs[0].product_id == "x1" and refs[0].uri == str(tmp_path / "images" / "Banana_Iconic.jpg")


@pytest.mark.parametrize("flags, tile_aspect, small_print", [([], 2.5, 26.0), (["--small-print", "0", "--tile-aspect", "0"], 0.0, 0.0)])
def test_enrich_command_passes_the_detection_options_to_the_engine(monkeypatch, tmp_path, flags, tile_aspect, small_print):
    from click.testing import CliRunner

    import pipelines.enrich as enrich

    seen = {}
    monkeypatch.setattr(enrich, "run_enrich", lambda *a, **kw: seen.update(kw) or {})
    monkeypatch.setattr("pipelines.summary.print_summary", lambda summary: None)
    result = CliRunner().invoke(enrich.command, ["--catalog", str(tmp_path), "--out", str(tmp_path / "out"), *flags])
    assert result.exit_code == 0, result.output
    assert (seen["config"].tile_aspect, seen["config"].det_small_text) == (tile_aspect, small_print)
