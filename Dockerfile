# The aisle image: one container for the Vertex AI pipeline steps (KFP
# components), the Dataflow workers (--sdk_container_image) and the Dataflow
# flex template launcher.
#
# Build (no local Docker needed), from the repository root:
#   REGION=europe-west1 PROJECT=<project_id> TAG=$(git rev-parse --short HEAD)
#   gcloud builds submit --project $PROJECT --region $REGION \
#       --tag $REGION-docker.pkg.dev/$PROJECT/aisle/aisle:$TAG .
# or with a local Docker:
#   docker build -t $REGION-docker.pkg.dev/$PROJECT/aisle/aisle:$TAG .
#   docker push $REGION-docker.pkg.dev/$PROJECT/aisle/aisle:$TAG
#
# Every version is pinned: the Python base, the Beam SDK whose boot binary
# Dataflow starts workers with (it must equal the apache-beam version the
# project installs), torch (CPU build), and the project's own pins in
# pyproject.toml. For fully reproducible builds pin the images by digest
# (python:3.11-slim@sha256:...).

# The flex template launcher image has no version tags worth trusting: pin
# it by digest at build time (--build-arg LAUNCHER_IMAGE=...@sha256:...).
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

FROM apache/beam_python3.11_sdk:2.77.0 AS beam
FROM ${LAUNCHER_IMAGE} AS launcher

FROM python:3.11-slim

# OpenCV (rapidocr) needs libGL and GLib; tesseract is the OCR baseline.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 tesseract-ocr \
    && rm -rf /var/lib/apt/lists/*

# MALLOC_ARENA_MAX: two glibc arenas instead of one per allocating thread; an SDK worker's gRPC threads
# otherwise hold freed memory (pipelines/options.py gives local worker processes the same).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned, from the CPU index: an unpinned torch pulls CUDA packages.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# The Beam SDK harness boot binary (Dataflow workers) and the flex template launcher.
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# The project: its dependencies first (a layer that changes only with pyproject.toml), then the code.
WORKDIR /opt/aisle
COPY pyproject.toml README.md ./
COPY pipelines pipelines
COPY transforms transforms
COPY components components
RUN pip install . \
    && python -c "import apache_beam, kfp, torch; assert apache_beam.__version__ == '2.77.0', apache_beam.__version__; assert torch.__version__.startswith('2.13.0'), torch.__version__"
COPY config config
COPY samples samples
COPY flex_template/main.py /opt/aisle/flex_main.py

# Flex templates: the launcher runs this file, which runs python -m pipelines.<job>.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/aisle/flex_main.py

# Dataflow starts SDK workers through Beam's boot binary; Vertex AI pipeline
# steps and the flex template launcher set their own command.
ENTRYPOINT ["/opt/apache/beam/boot"]
