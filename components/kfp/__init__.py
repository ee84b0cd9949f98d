"""KFP v2 components and pipelines of aisle: thin wrappers over the plain functions.

One component per module; each checks its arguments, imports the library
function it wraps inside its body (so compiling needs no heavy imports and
Vertex runs it in the aisle image) and writes Dataset/Model/Metrics/HTML
artifacts. :mod:`components.kfp.pipelines` wires them into the
``training`` and ``batch`` pipelines; :mod:`pipelines.kfp_cli` compiles,
runs them locally and submits them to Vertex AI.
"""
