"""The Dockerfile, read as text (no Docker engine here): the facts Dataflow and Vertex depend on."""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


@pytest.fixture(scope="module")
def instructions():
    return _instructions()


def _final_stage(instructions):
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    return instructions[last_from:]


def test_final_stage_is_pinned_python_311_slim(instructions):
    assert _final_stage(instructions)[0] == ("FROM", "python:3.11-slim")


def test_workers_keep_malloc_to_two_arenas_as_local_workers_do(instructions):
    from pipelines.options import MALLOC_ARENAS

    envs = " ".join(args for word, args in _final_stage(instructions) if word == "ENV")
    assert f"MALLOC_ARENA_MAX={MALLOC_ARENAS}" in envs.split()


def test_beam_boot_binary_matches_the_project_beam_version(instructions):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    beam_version = next(p.split("==")[1] for p in pins if p.startswith("apache-beam"))
    assert ("FROM", f"apache/beam_python3.11_sdk:{beam_version} AS beam") in instructions
    assert ("COPY", "--from=beam /opt/apache/beam /opt/apache/beam") in instructions
    assert _final_stage(instructions)[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]')


def test_torch_is_pinned_cpu_and_installed_before_the_project(instructions):
    runs = [(i, args) for i, (w, args) in enumerate(instructions) if w == "RUN"]
    torch = [i for i, a in runs if "torch==" in a and "pip install" in a]
    project = [i for i, a in runs if re.search(r"pip install \.(\s|$)", a)]
    assert torch and project, "torch and the project must both be pip-installed"
    torch_line = instructions[torch[0]][1]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={next(p.split('==')[1] for p in pins if p.startswith('torch=='))}" in torch_line
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_line
    assert torch[0] < project[0]


def test_project_sources_copied_before_install(instructions):
    copies = {args.split()[0]: i for i, (w, args) in enumerate(instructions) if w == "COPY" and not args.startswith("--from")}
    install = next(i for i, (w, a) in enumerate(instructions) if w == "RUN" and "pip install ." in a)
    for needed in ("pyproject.toml", "pipelines", "transforms", "components"):
        assert copies[needed] < install, needed
    assert "config" in copies  # the environment YAML files


def test_flex_template_launcher(instructions):
    assert ("COPY", "--from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher") in instructions
    env = " ".join(a for w, a in instructions if w == "ENV")
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/aisle/flex_main.py" in env
    assert ("COPY", "flex_template/main.py /opt/aisle/flex_main.py") in instructions


def test_dockerignore_keeps_the_venv_and_outputs_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "out", "tests"} <= ignored
    for needed in ("pipelines", "transforms", "components", "config", "flex_template", "pyproject.toml", "README.md"):
        assert needed not in ignored


def test_flex_main_splits_the_job_parameter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("flex_main", ROOT / "flex_template" / "main.py")
    flex_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flex_main)
    assert flex_main.split_job(["--job=batch", "--catalog=gs://b/c", "--runner", "DataflowRunner"]) == (
        "batch",
        ["--catalog=gs://b/c", "--runner", "DataflowRunner"],
    )
    assert flex_main.split_job(["--input=x", "--job", "ingest"]) == ("ingest", ["--input=x"])
    with pytest.raises(SystemExit, match="job='train'"):
        flex_main.split_job(["--job=train"])
