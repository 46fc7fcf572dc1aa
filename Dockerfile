# Corral control-plane image: the kopf operator (`python -m corral_operator`, the default) and the
# in-cluster control API (`python -m corral_operator.controlapi`). Runs as a non-root user and
# writes only under /tmp, so it works with readOnlyRootFilesystem (the Helm chart mounts an
# emptyDir there). Build from the repository root:
#
#   docker build -t ghcr.io/corral-dev/corral:0.1.0 .
#
# Ray pods use a Ray image with Corral installed (values: ray.image); this image does not run Ray.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/corral
ENV PATH=/opt/corral/bin:$PATH
# The control plane only: no torch, transformers, PEFT, DeepSpeed or Ray (the `ml` extra is for the
# Ray image). The import check fails the build if any of them sneaks into the operator's imports.
RUN pip install --upgrade "pip>=24"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY operators ./operators
RUN pip install . \
 && python -c "import sys, corral, corral_operator._handlers, corral_operator.controlapi; \
heavy = [m for m in ('torch', 'transformers', 'peft', 'deepspeed', 'ray') if m in sys.modules]; \
sys.exit(f'the control plane imported {heavy}') if heavy else None"

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="Corral operator and control API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 corral \
 && useradd --system --uid 10001 --gid corral --home-dir /tmp --shell /usr/sbin/nologin corral
COPY --from=build /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    HF_HOME=/tmp/hf
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080
ENTRYPOINT ["python", "-m"]
CMD ["corral_operator"]
