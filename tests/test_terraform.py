"""Offline checks of terraform/: no terraform binary, no cloud.

Every ``.tf`` file must parse (python-hcl2), and the configuration must hold
the platform's rules: every variable typed and described, every bucket
private, no basic (primitive) IAM roles, every labelable resource labelled
with the common ``labels`` map, and module calls that agree with the
modules they call. Each rule is a checker function returning a list of
problems; the tests at the bottom feed them deliberately bad snippets to
show that they can fail.

Checkov runs in tests/test_terraform_checkov.py.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
from collections.abc import Iterable

import hcl2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TF = ROOT / "terraform"
MODULES = TF / "modules"
# The composition module: wires the other modules into one environment; the
# environment roots call it and pass its outputs through.
PLATFORM = MODULES / "platform"
ENVIRONMENTS = TF / "environments"
ENV_NAMES = ("dev", "prod")
FLEX_TEMPLATES = TF / "flex_templates"
SCHEMAS = MODULES / "bigquery" / "schemas"

MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
# Module arguments that are Terraform's, not the module's variables.
META_ARGUMENTS = {"source", "version", "count", "for_each", "depends_on", "providers"}
PRIMITIVE_ROLE = re.compile(r"roles/(owner|editor|viewer)\b")
PUBLIC_MEMBER = re.compile(r"\ball(Authenticated)?Users\b")
# Resource types aisle uses (or may add) that take a `labels` argument.
LABELLED_TYPES = {
    "google_storage_bucket",
    "google_bigquery_dataset",
    "google_bigquery_table",
    "google_artifact_registry_repository",
    "google_vertex_ai_tensorboard",
    "google_vertex_ai_dataset",
    "google_vertex_ai_endpoint",
    "google_vertex_ai_featurestore",
    "google_dataflow_job",
    "google_dataflow_flex_template_job",
    "google_kms_crypto_key",
    "google_pubsub_topic",
    "google_pubsub_subscription",
    "google_compute_instance",
}
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def plain(value):
    """python-hcl2 output without its quoting and bookkeeping keys.

    python-hcl2 8 keeps the quotes of string literals and block labels
    (``'"enforced"'``); older versions drop them. Both come out unquoted.
    """
    if isinstance(value, dict):
        return {_unquote(k): plain(v) for k, v in value.items() if not (k.startswith("__") and k.endswith("__"))}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def parse(path: pathlib.Path) -> dict:
    """A .tf or .tfvars file as plain Python values (do not mutate: results are cached)."""
    return _parse(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _parse(path: str, mtime_ns: int) -> dict:
    with open(path) as f:
        return plain(hcl2.load(f))


def load_dir(directory: pathlib.Path) -> dict[str, list]:
    """All top-level blocks of a directory's .tf files, by block type."""
    blocks: dict[str, list] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, items in parse(path).items():
            blocks.setdefault(kind, []).extend(items)
    return blocks


def named(blocks: dict[str, list], kind: str) -> dict[str, dict]:
    """Blocks with one label (variable, output, module) by name."""
    out = {}
    for item in blocks.get(kind, []):
        out.update(item)
    return out


def resources(blocks: dict[str, list]) -> list[tuple[str, str, dict]]:
    """(type, name, body) of every resource block."""
    out = []
    for item in blocks.get("resource", []):
        for rtype, by_name in item.items():
            for name, body in by_name.items():
                out.append((rtype, name, body))
    return out


def locals_of(blocks: dict[str, list]) -> dict:
    out = {}
    for item in blocks.get("locals", []):
        out.update(item)
    return out


def code_text(directory: pathlib.Path) -> str:
    """The .tf text of a directory with comments removed (for reference scans)."""
    text = "\n".join(p.read_text() for p in sorted(directory.glob("*.tf")))
    return re.sub(r"(?m)^\s*(#|//).*$|\s#.*$", "", text)


def module_dirs() -> list[pathlib.Path]:
    return sorted(p for p in MODULES.iterdir() if p.is_dir())


def root_dirs() -> list[pathlib.Path]:
    return [ENVIRONMENTS / env for env in ENV_NAMES]


def all_tf_dirs() -> list[pathlib.Path]:
    return module_dirs() + root_dirs()


def composing_dirs() -> list[pathlib.Path]:
    """The directories that call modules: the roots and the platform module."""
    return [d for d in all_tf_dirs() if named(load_dir(d), "module")]


def for_each_map(directory: pathlib.Path, rtype: str) -> dict[str, dict]:
    """The entries of the local map the single `for_each` resource of a type iterates over."""
    (body,) = [b for t, _, b in resources(load_dir(directory)) if t == rtype]
    m = re.fullmatch(r"\$\{local\.(\w+)\}", str(body.get("for_each", "")))
    assert m, f"{rtype} in {directory.name} has no for_each over a local map"
    return locals_of(load_dir(directory))[m.group(1)]


def dynamic_blocks(body: dict) -> dict[str, dict]:
    """The `dynamic` blocks of a resource body by block type."""
    out = {}
    for item in body.get("dynamic", []):
        out.update(item)
    return out


def resource_instances(directory: pathlib.Path, rtype: str) -> int:
    """How many instances of a type a directory declares (a for_each over a local map counts its entries)."""
    count = 0
    for t, _, body in resources(load_dir(directory)):
        if t == rtype:
            count += len(for_each_map(directory, rtype)) if "for_each" in body else 1
    return count


# --------------------------------------------------------------------------
# Checkers: each returns a list of problems, empty when all is well
# --------------------------------------------------------------------------


def variable_problems(directory: pathlib.Path) -> list[str]:
    """Every variable has a non-empty description and a type."""
    problems = []
    for name, body in named(load_dir(directory), "variable").items():
        if not str(body.get("description", "")).strip():
            problems.append(f"{directory.name}: variable {name!r} has no description")
        if "type" not in body:
            problems.append(f"{directory.name}: variable {name!r} has no type")
    return problems


def output_problems(directory: pathlib.Path) -> list[str]:
    """Every output has a non-empty description."""
    return [
        f"{directory.name}: output {name!r} has no description"
        for name, body in named(load_dir(directory), "output").items()
        if not str(body.get("description", "")).strip()
    ]


def bucket_problems(directory: pathlib.Path) -> list[str]:
    """Every bucket has uniform bucket-level access and enforced public access prevention."""
    problems = []
    for rtype, name, body in resources(load_dir(directory)):
        if rtype != "google_storage_bucket":
            continue
        if body.get("uniform_bucket_level_access") is not True:
            problems.append(f"{directory.name}: bucket {name!r} lacks uniform_bucket_level_access = true")
        if body.get("public_access_prevention") != "enforced":
            problems.append(f"{directory.name}: bucket {name!r} lacks public_access_prevention = \"enforced\"")
    return problems


def role_problems(paths: Iterable[pathlib.Path]) -> list[str]:
    """No basic roles (owner, editor, viewer) and no public members anywhere."""
    problems = []
    for path in paths:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if m := PRIMITIVE_ROLE.search(code):
                problems.append(f"{path.name}:{lineno}: basic role {m.group(0)}")
            if m := PUBLIC_MEMBER.search(code):
                problems.append(f"{path.name}:{lineno}: public member {m.group(0)}")
    return problems


def label_problems(directory: pathlib.Path) -> list[str]:
    """Every labelable resource sets labels from the module's `labels` variable."""
    problems = []
    for rtype, name, body in resources(load_dir(directory)):
        if rtype in LABELLED_TYPES and "var.labels" not in str(body.get("labels", "")):
            problems.append(f"{directory.name}: {rtype}.{name} is not labelled with var.labels")
    return problems


def provider_floor_problems(directory: pathlib.Path) -> list[str]:
    """Every provider a module's resources use has a `>=` version floor in versions.tf."""
    blocks = load_dir(directory)
    required: dict[str, dict] = {}
    for terraform in blocks.get("terraform", []):
        for rp in terraform.get("required_providers", []):
            required.update(rp)
    problems = []
    if not any("required_version" in t for t in blocks.get("terraform", [])):
        problems.append(f"{directory.name}: no required_version")
    used = set()
    for kind in ("resource", "data"):
        for item in blocks.get(kind, []):
            for rtype, by_name in item.items():
                for body in by_name.values():
                    provider = str(body.get("provider", "")).removeprefix("${").removesuffix("}")
                    used.add(provider or rtype.split("_", 1)[0])
    for provider in sorted(used):
        spec = required.get(provider)
        if not spec or ">=" not in str(spec.get("version", "")):
            problems.append(f"{directory.name}: provider {provider!r} has no version floor in versions.tf")
    return problems


def skip_comment_problems(paths: Iterable[pathlib.Path]) -> list[str]:
    """Every `#checkov:skip=CKV_...` comment gives its reason."""
    problems = []
    for path in paths:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if m := SKIP_COMMENT.search(line):
                if len((m.group(2) or "").strip()) < 10:
                    problems.append(f"{path.name}:{lineno}: checkov skip of {m.group(1)} without a reason")
    return problems


def reference_problems(directory: pathlib.Path) -> list[str]:
    """Every var.x and local.x used in a directory is declared there."""
    blocks = load_dir(directory)
    text = code_text(directory)
    declared_vars = set(named(blocks, "variable"))
    declared_locals = set(locals_of(blocks))
    problems = [
        f"{directory.name}: var.{v} is used but not declared"
        for v in sorted(set(re.findall(r"\bvar\.(\w+)", text)) - declared_vars)
    ]
    problems += [
        f"{directory.name}: local.{v} is used but not declared"
        for v in sorted(set(re.findall(r"\blocal\.(\w+)", text)) - declared_locals)
    ]
    return problems


def module_call_problems(root: pathlib.Path) -> list[str]:
    """Module calls agree with the modules they call.

    Every argument is a declared variable of the module, every variable
    without a default is passed, and every module.<call>.<output> reference
    names a call of this root and an output its module declares.
    """
    problems = []
    calls = named(load_dir(root), "module")
    outputs_of: dict[str, set[str]] = {}
    for call, body in calls.items():
        source = (root / str(body.get("source", ""))).resolve()
        if not (source / "variables.tf").is_file():
            problems.append(f"{root.name}: module {call!r} source {body.get('source')!r} is not a module directory")
            continue
        module_blocks = load_dir(source)
        variables = named(module_blocks, "variable")
        outputs_of[call] = set(named(module_blocks, "output"))
        arguments = set(body) - META_ARGUMENTS
        for arg in sorted(arguments - set(variables)):
            problems.append(f"{root.name}: module {call!r} passes {arg!r}, which {source.name} does not declare")
        for var in sorted(v for v, spec in variables.items() if "default" not in spec):
            if var not in arguments:
                problems.append(f"{root.name}: module {call!r} does not pass required variable {var!r}")
    text = code_text(root)
    for call, output in re.findall(r"\bmodule\.(\w+)(?:\[[^\]]*\])?\.(\w+)", text):
        if call not in calls:
            problems.append(f"{root.name}: module.{call} is referenced but never called")
        elif call in outputs_of and output not in outputs_of[call]:
            problems.append(f"{root.name}: module.{call}.{output} is not an output of that module")
    for call in re.findall(r"\bmodule\.(\w+)\b(?!\s*[.\[])", text):
        if call not in calls:
            problems.append(f"{root.name}: module.{call} is referenced but never called")
    return problems


def module_label_problems(root: pathlib.Path) -> list[str]:
    """Every module that takes `labels` gets the common labels (local.labels of the calling directory)."""
    problems = []
    for call, body in named(load_dir(root), "module").items():
        source = (root / str(body.get("source", ""))).resolve()
        if (source / "variables.tf").is_file() and "labels" in named(load_dir(source), "variable"):
            if body.get("labels") != "${local.labels}":
                problems.append(f"{root.name}: module {call!r} is not given labels = local.labels")
    return problems


# --------------------------------------------------------------------------
# The real configuration
# --------------------------------------------------------------------------


def _ids(dirs):
    return [f"{d.parent.name}/{d.name}" for d in dirs]


@pytest.mark.parametrize("path", sorted(TF.rglob("*.tf")), ids=lambda p: str(p.relative_to(TF)))
def test_every_tf_file_parses(path):
    assert isinstance(parse(path), dict)


@pytest.mark.parametrize("path", sorted(TF.rglob("*.tfvars*")), ids=lambda p: str(p.relative_to(TF)))
def test_every_tfvars_file_parses(path):
    assert isinstance(parse(path), dict)


def test_the_expected_modules_exist():
    names = {d.name for d in module_dirs()}
    assert {"platform", "project_services", "storage", "bigquery", "artifact_registry", "iam", "network", "vertex", "scheduler"} <= names


@pytest.mark.parametrize("module", module_dirs(), ids=_ids(module_dirs()))
def test_module_has_the_standard_files(module):
    missing = [f for f in MODULE_FILES if not (module / f).is_file()]
    assert not missing, f"{module.name} lacks {missing}"


@pytest.mark.parametrize("directory", all_tf_dirs(), ids=_ids(all_tf_dirs()))
def test_variables_are_typed_and_described(directory):
    assert variable_problems(directory) == []


@pytest.mark.parametrize("directory", all_tf_dirs(), ids=_ids(all_tf_dirs()))
def test_outputs_are_described(directory):
    assert output_problems(directory) == []


@pytest.mark.parametrize("directory", all_tf_dirs(), ids=_ids(all_tf_dirs()))
def test_providers_have_version_floors(directory):
    assert provider_floor_problems(directory) == []


@pytest.mark.parametrize("directory", all_tf_dirs(), ids=_ids(all_tf_dirs()))
def test_references_are_declared(directory):
    assert reference_problems(directory) == []


@pytest.mark.parametrize("directory", all_tf_dirs(), ids=_ids(all_tf_dirs()))
def test_labelable_resources_are_labelled(directory):
    assert label_problems(directory) == []


def test_buckets_are_private():
    problems = []
    count = 0
    for directory in all_tf_dirs():
        problems += bucket_problems(directory)
        count += resource_instances(directory, "google_storage_bucket")
    assert count == 5
    assert problems == []


def test_no_basic_roles_or_public_members():
    paths = sorted(TF.rglob("*.tf")) + sorted(TF.rglob("*.tfvars*"))
    assert role_problems(paths) == []


def test_checkov_skips_give_reasons():
    assert skip_comment_problems(sorted(TF.rglob("*.tf"))) == []


def test_the_roots_and_the_platform_call_modules():
    assert set(composing_dirs()) == {*root_dirs(), PLATFORM}


@pytest.mark.parametrize("directory", composing_dirs(), ids=_ids(composing_dirs()))
def test_module_calls_match_the_modules(directory):
    assert module_call_problems(directory) == []


def test_modules_get_the_common_labels():
    assert "labels" in locals_of(load_dir(PLATFORM))
    assert module_label_problems(PLATFORM) == []


@pytest.mark.parametrize("root", root_dirs(), ids=ENV_NAMES)
def test_roots_are_thin(root):
    """A root is one call of the platform module, given every root variable as it is, plus env."""
    blocks = load_dir(root)
    assert set(blocks) <= {"terraform", "provider", "variable", "output", "module"}
    calls = named(blocks, "module")
    assert set(calls) == {"platform"}
    call = calls["platform"]
    assert call["source"] == "../../modules/platform"
    variables = named(blocks, "variable")
    assert {k: v for k, v in call.items() if k not in META_ARGUMENTS | {"env"}} == {v: f"${{var.{v}}}" for v in variables}
    assert set(named(load_dir(PLATFORM), "variable")) == set(variables) | {"env"}


@pytest.mark.parametrize("root", root_dirs(), ids=ENV_NAMES)
def test_roots_pass_every_platform_output_through(root):
    outputs = named(load_dir(root), "output")
    assert set(outputs) == set(named(load_dir(PLATFORM), "output"))
    assert {name: body["value"] for name, body in outputs.items()} == {name: f"${{module.platform.{name}}}" for name in outputs}


@pytest.mark.parametrize("root", root_dirs(), ids=ENV_NAMES)
def test_root_uses_a_gcs_backend_configured_at_init(root):
    terraform = load_dir(root)["terraform"]
    backends = [b for t in terraform for b in t.get("backend", [])]
    assert backends == [{"gcs": {}}]


def test_environments_differ_only_by_name():
    """dev and prod wire the same modules the same way; tfvars hold the differences."""
    texts = {env: (ENVIRONMENTS / env / "main.tf").read_text() for env in ENV_NAMES}
    normalized = {env: text.replace(f'"{env}"', '"ENV"').replace(f"The {env} environment", "The ENV environment") for env, text in texts.items()}
    assert normalized["dev"] == normalized["prod"]
    for name in ("variables.tf", "outputs.tf"):
        assert (ENVIRONMENTS / "dev" / name).read_text() == (ENVIRONMENTS / "prod" / name).read_text()


@pytest.mark.parametrize("env", ENV_NAMES)
def test_names_follow_the_contract(env):
    assert named(load_dir(ENVIRONMENTS / env), "module")["platform"]["env"] == env
    local = locals_of(load_dir(PLATFORM))
    assert local["env"] == "${var.env}"
    assert local["name_prefix"] == "aisle-${local.env}"
    calls = named(load_dir(PLATFORM), "module")
    assert calls["bigquery"]["dataset_id"] == '${replace(local.name_prefix, "-", "_")}'
    assert calls["artifact_registry"]["repository_id"] == "aisle"
    assert calls["storage"]["name_prefix"] == "${local.name_prefix}"
    assert calls["iam"]["name_prefix"] == "${local.name_prefix}"


def test_bucket_names():
    blocks = load_dir(MODULES / "storage")
    assert locals_of(blocks)["prefix"] == "${var.project_id}-${var.name_prefix}"
    (body,) = [b for t, _, b in resources(blocks) if t == "google_storage_bucket"]
    assert body["name"] == "${local.prefix}-${each.value.suffix}"
    names = {key: f"${{local.prefix}}-{bucket['suffix']}" for key, bucket in for_each_map(MODULES / "storage", "google_storage_bucket").items()}
    assert names == {
        "landing": "${local.prefix}-landing",
        "processed": "${local.prefix}-processed",
        "models": "${local.prefix}-models",
        "pipeline_root": "${local.prefix}-pipeline-root",
        "dataflow": "${local.prefix}-dataflow",
    }


def test_data_buckets_keep_versions_and_every_bucket_has_lifecycle_rules():
    (body,) = [b for t, _, b in resources(load_dir(MODULES / "storage")) if t == "google_storage_bucket"]
    assert body["versioning"] == [{"enabled": "${each.value.versioning}"}]
    assert dynamic_blocks(body)["lifecycle_rule"]["for_each"] == "${each.value.lifecycle_rules}"
    for name, bucket in for_each_map(MODULES / "storage", "google_storage_bucket").items():
        assert bucket.get("lifecycle_rules"), f"bucket {name} has no lifecycle rule"
        if name in ("landing", "processed", "models"):
            assert bucket["versioning"] is True, f"bucket {name} must keep versions"
        else:  # the unversioned buckets that the CKV_GCP_78 skip names
            assert bucket["versioning"] is False, f"bucket {name}: versioning is not the skip's premise"


def test_service_accounts():
    blocks = load_dir(MODULES / "iam")
    local = locals_of(blocks)
    assert set(local["accounts"]) == {"dataflow", "pipelines", "scheduler"}
    (sa,) = [body for t, _, body in resources(blocks) if t == "google_service_account"]
    assert sa["account_id"] == "${var.name_prefix}-${each.key}"
    text = (MODULES / "iam" / "main.tf").read_text()
    # pipelines may act as the dataflow workers; the scheduler may act as the pipelines account
    assert re.search(r"dataflow\s*=\s*concat\(\[\"pipelines\"\]", text)
    assert re.search(r"pipelines\s*=\s*concat\(\[\"pipelines\"\], local\.schedules_vertex \? \[\"scheduler\"\]", text)
    assert '"roles/aiplatform.user"' in text


def test_bigquery_tables():
    (body,) = [b for t, _, b in resources(load_dir(MODULES / "bigquery")) if t == "google_bigquery_table"]
    assert body["table_id"] == "${each.key}"
    assert body["schema"] == '${file("${local.schemas}/${each.value.schema}")}'
    partitioning = dynamic_blocks(body)["time_partitioning"]["content"][0]
    assert partitioning["type"] == "DAY"
    tables = for_each_map(MODULES / "bigquery", "google_bigquery_table")
    assert set(tables) == {"products", "user_events", "cancellations", "dead_letters"}
    events = tables["user_events"]
    assert events["partitioning"] == {"field": "eventTime", "expiration_ms": None}
    assert events["clustering"] == ["eventType"]
    assert tables["cancellations"]["partitioning"] == events["partitioning"]
    assert tables["products"]["partitioning"] is None
    dead = tables["dead_letters"]["partitioning"]
    assert dead["field"] is None and dead["expiration_ms"]  # ingestion-time partitioning, old partitions expire
    for table in tables.values():
        assert (SCHEMAS / table["schema"]).is_file()


def _fields(schema: list[dict]) -> dict[str, dict]:
    return {f["name"]: f for f in schema}


def test_product_schema_follows_the_retail_import_schema():
    f = _fields(json.loads((SCHEMAS / "products.json").read_text()))
    expected = {"id", "title", "categories", "brands", "priceInfo", "images", "attributes", "availability", "description", "uri", "publishTime"}
    assert expected <= set(f)
    assert f["categories"]["mode"] == f["brands"]["mode"] == "REPEATED"
    assert {k: v["type"] for k, v in _fields(f["priceInfo"]["fields"]).items()} == {"price": "FLOAT", "originalPrice": "FLOAT", "currencyCode": "STRING"}
    assert f["images"]["mode"] == "REPEATED"
    assert {k: v["type"] for k, v in _fields(f["images"]["fields"]).items()} == {"uri": "STRING", "height": "INTEGER", "width": "INTEGER"}
    attr = _fields(f["attributes"]["fields"])
    assert f["attributes"]["mode"] == "REPEATED" and attr["key"]["type"] == "STRING"
    value = _fields(attr["value"]["fields"])
    assert (value["text"]["type"], value["text"]["mode"]) == ("STRING", "REPEATED")
    assert (value["numbers"]["type"], value["numbers"]["mode"]) == ("FLOAT", "REPEATED")
    assert f["publishTime"]["type"] == "TIMESTAMP"


def test_user_event_schema_follows_the_retail_import_schema():
    f = _fields(json.loads((SCHEMAS / "user_events.json").read_text()))
    assert {"eventType", "visitorId", "eventTime", "userInfo", "productDetails", "purchaseTransaction", "attributes", "sessionId"} <= set(f)
    assert f["eventType"]["mode"] == f["visitorId"]["mode"] == "REQUIRED"
    assert f["eventTime"]["type"] == "TIMESTAMP"
    assert set(_fields(f["userInfo"]["fields"])) == {"userId"}
    details = _fields(f["productDetails"]["fields"])
    assert f["productDetails"]["mode"] == "REPEATED"
    assert set(_fields(details["product"]["fields"])) == {"id"} and details["quantity"]["type"] == "INTEGER"
    assert {"id", "revenue", "currencyCode"} <= set(_fields(f["purchaseTransaction"]["fields"]))


def test_dead_letter_schema():
    f = _fields(json.loads((SCHEMAS / "dead_letters.json").read_text()))
    assert {k: v["type"] for k, v in f.items()} == {
        "source_file": "STRING",
        "source_offset": "INTEGER",
        "source_format": "STRING",
        "raw": "STRING",
        "reason": "STRING",
        "detail": "STRING",
    }


# The entry points' options: python -m pipelines.ingest / python -m pipelines.batch.
FLEX_PARAMETERS = {
    "ingest": {"job", "input", "format", "out", "kind", "mapping", "currency", "catalog"},
    "batch": {"job", "catalog", "events", "out"},
}
FLEX_REQUIRED = {"ingest": {"job", "input", "format", "out"}, "batch": {"job", "catalog", "events", "out"}}


@pytest.mark.parametrize("job", sorted(FLEX_PARAMETERS))
def test_flex_template_metadata(job):
    meta = json.loads((FLEX_TEMPLATES / f"{job}.json").read_text())
    assert meta["name"] == f"aisle-{job}"
    assert {p["name"] for p in meta["parameters"]} == FLEX_PARAMETERS[job]
    assert {p["name"] for p in meta["parameters"] if not p.get("isOptional")} == FLEX_REQUIRED[job]
    for p in meta["parameters"]:
        assert p["label"] and p["helpText"], p["name"]
        for regex in p.get("regexes", []):
            re.compile(regex)


def test_flex_template_specs_name_the_image():
    text = (MODULES / "flex_templates" / "main.tf").read_text()
    assert "image" in text and 'language = "PYTHON"' in text
    local = locals_of(load_dir(PLATFORM))
    assert local["image"] == "${module.artifact_registry.image}:${var.image_tag}"
    outputs = named(load_dir(MODULES / "artifact_registry"), "output")
    assert outputs["image"]["value"] == "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}/aisle"


TFVARS = sorted(ENVIRONMENTS.rglob("*.tfvars*"))


def test_tfvars_files_exist():
    names = {str(p.relative_to(ENVIRONMENTS)) for p in TFVARS}
    assert {"prod/terraform.tfvars", "dev/terraform.tfvars.example"} <= names


@pytest.mark.parametrize("path", TFVARS, ids=lambda p: str(p.relative_to(ENVIRONMENTS)))
def test_tfvars_set_declared_variables_and_valid_schedules(path):
    values = parse(path)
    variables = named(load_dir(path.parent), "variable")
    assert set(values) <= set(variables), f"{path}: undeclared {set(values) - set(variables)}"
    for key, job in values.get("schedules", {}).items():
        assert job["target"] in ("vertex_pipeline", "flex_template"), key
        assert len(job["schedule"].split()) == 5, f"{key}: {job['schedule']!r} is not a five-field cron"
        assert re.fullmatch(r"[a-z][a-z0-9-]*", key), f"schedule key {key!r} must be lower-case with dashes"
        if job["target"] == "flex_template":
            meta = json.loads((FLEX_TEMPLATES / f"{job['template']}.json").read_text())
            params = {p["name"]: p for p in meta["parameters"]}
            given = set(job.get("parameters", {})) | {"job"}  # the scheduler module adds job
            assert given <= set(params), f"{key}: unknown parameters {given - set(params)}"
            required = {n for n, p in params.items() if not p.get("isOptional")}
            assert required <= given, f"{key}: missing parameters {required - given}"


def test_prod_runs_dataflow_without_public_ips():
    values = parse(ENVIRONMENTS / "prod" / "terraform.tfvars")
    assert values["private_dataflow_network"] is True
    subnet = [b for t, _, b in resources(load_dir(MODULES / "network")) if t == "google_compute_subnetwork"]
    assert subnet and all(s["private_ip_google_access"] is True for s in subnet)


@pytest.mark.parametrize("env", ENV_NAMES)
def test_roots_expose_the_names_the_cli_reads(env):
    outputs = named(load_dir(ENVIRONMENTS / env), "output")
    assert {
        "project_id",
        "region",
        "name_prefix",
        "buckets",
        "bigquery_dataset",
        "bigquery_tables",
        "artifact_registry_repository",
        "image",
        "service_accounts",
        "dataflow_service_account",
        "pipelines_service_account",
        "scheduler_service_account",
        "pipeline_root",
        "dataflow_temp_location",
        "dataflow_subnetwork",
        "flex_templates",
    } <= set(outputs)


# --------------------------------------------------------------------------
# The checkers catch what they are for
# --------------------------------------------------------------------------

BAD_MODULE = """
variable "project_id" {
  type = string
}

variable "labels" {
  description = "Labels."
  type        = map(string)
}

variable "name" {
  description = "Name."
}

resource "google_storage_bucket" "open" {
  #checkov:skip=CKV_GCP_62
  name                        = "${var.project_id}-open"
  location                    = "EU"
  uniform_bucket_level_access = false
}

resource "google_bigquery_dataset" "unlabelled" {
  dataset_id = "x_${var.nope}"
  labels     = { team = "x" }
}

resource "google_project_iam_member" "too_much" {
  project = var.project_id
  role    = "roles/editor"
  member  = "allUsers"
}

output "bucket" {
  value = google_storage_bucket.open.name
}
"""

BAD_ROOT = """
locals {
  labels = {}
}

module "bad" {
  source    = "../module"
  labels    = { other = "x" }
  unknown   = 1
}

output "x" {
  description = "Refers to an output the module lacks and to a module never called."
  value       = [module.bad.missing, module.ghost.id]
}
"""


@pytest.fixture
def bad(tmp_path):
    (tmp_path / "module").mkdir()
    (tmp_path / "module" / "main.tf").write_text(BAD_MODULE)
    (tmp_path / "module" / "variables.tf").write_text("")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "main.tf").write_text(BAD_ROOT)
    return tmp_path


def test_checkers_flag_an_untyped_or_undescribed_variable(bad):
    problems = variable_problems(bad / "module")
    assert any("'project_id' has no description" in p for p in problems)
    assert any("'name' has no type" in p for p in problems)


def test_checkers_flag_an_undescribed_output(bad):
    assert any("'bucket' has no description" in p for p in output_problems(bad / "module"))


def test_checkers_flag_a_public_bucket(bad):
    problems = bucket_problems(bad / "module")
    assert any("uniform_bucket_level_access" in p for p in problems)
    assert any("public_access_prevention" in p for p in problems)


def test_checkers_flag_basic_roles_and_public_members(bad):
    problems = role_problems([bad / "module" / "main.tf"])
    assert any("roles/editor" in p for p in problems)
    assert any("allUsers" in p for p in problems)


def test_checkers_flag_unlabelled_resources(bad):
    problems = label_problems(bad / "module")
    assert any("google_storage_bucket.open" in p for p in problems)
    assert any("google_bigquery_dataset.unlabelled" in p for p in problems)


def test_checkers_flag_missing_provider_floors(bad):
    assert any("'google' has no version floor" in p for p in provider_floor_problems(bad / "module"))


def test_checkers_flag_a_skip_without_a_reason(bad):
    assert any("CKV_GCP_62 without a reason" in p for p in skip_comment_problems([bad / "module" / "main.tf"]))


def test_checkers_flag_undeclared_references(bad):
    assert any("var.nope" in p for p in reference_problems(bad / "module"))


def test_checkers_flag_inconsistent_module_calls(bad):
    problems = module_call_problems(bad / "root")
    assert any("passes 'unknown'" in p for p in problems)
    assert any("required variable 'project_id'" in p for p in problems)
    assert any("required variable 'name'" in p for p in problems)
    assert any("module.bad.missing is not an output" in p for p in problems)
    assert any("module.ghost is referenced but never called" in p for p in problems)
    assert any("labels = local.labels" in p for p in module_label_problems(bad / "root"))
