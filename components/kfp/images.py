"""The container image the components name when compiled.

Components are declared with this placeholder; :func:`components.kfp.pipelines.compile_pipeline`
writes the configured image (``image`` in ``config/<env>.yaml``, the aisle
image in Artifact Registry) into every executor of the compiled YAML. The
local runner runs components in this Python and ignores it.
"""

AISLE_IMAGE = "europe-west1-docker.pkg.dev/PROJECT/aisle/aisle:latest"
