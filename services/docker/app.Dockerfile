# The application image, shared by prefect-server, worker, mlflow, bootstrap, the bucket job and
# predict: Python + the locked dependencies (uv.lock, no dev group) + our code. Build context: the
# repository root (see .dockerignore). The code is copied, not installed: PYTHONPATH finds it.
#   PYTHON_IMAGE  base image (default python:3.11-slim). Behind a TLS-intercepting proxy, use a
#                 base that trusts your CA (SSL_CERT_FILE / PIP_CERT set): uv and pip honour them.
#   UV_VERSION    the uv used to install from uv.lock (same as the Makefile's).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG UV_VERSION=0.13.9
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Only the lock file decides what is installed (--frozen: fail rather than re-resolve). uv itself
# lives in a throw-away venv. nvidia-nccl-cu12 (470 MB) serves multi-GPU XGBoost only: skipped.
RUN python3 -m venv /tmp/uv \
    && /tmp/uv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system \
       UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 \
       /tmp/uv/bin/uv sync --frozen --no-dev --no-install-project \
           --no-install-package nvidia-nccl-cu12 --python "$(command -v python3)" \
    && rm -rf /tmp/uv
COPY prefect.yaml ./
COPY src ./src
COPY flows ./flows
COPY services ./services
# Code and venv stay root-owned (read-only to the app user); state goes to the user's home.
RUN python3 -m compileall -q /app/src /app/flows /app/services
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src:/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NYCTAXI_APP_DIR=/app \
    NYCTAXI_HOME=/home/app/.local/share/nyctaxi \
    GIT_PYTHON_REFRESH=quiet
USER app
CMD ["python", "-c", "print('nyctaxi app image: give it a command (see docker-compose.yml)')"]
