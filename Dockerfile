# One image for every uptake service (and the MLflow server of compose.yaml).
# GPU build by default: TORCH_INDEX selects the CUDA wheels; use
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/uptake
# torch first, from the chosen index, so the project install does not pull another build
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY uptake ./uptake
COPY watcher ./watcher
COPY pipeline ./pipeline
COPY registry ./registry
COPY serving ./serving
RUN pip install ".[postgres,auth]"

# MLflow's basic-auth app (compose runs `mlflow server --app-name basic-auth`): logged-in users
# may read; writes need a grant or an admin (docs/security.md). Users live in their own store.
RUN mkdir -p /etc/mlflow && printf '%s\n' '[mlflow]' \
      'default_permission = READ' \
      'database_uri = sqlite:////var/lib/mlflow/auth/basic_auth.db' \
      'authorization_function = mlflow.server.auth:authenticate_request_basic_auth' \
      > /etc/mlflow/basic_auth.ini

RUN useradd --create-home --uid 10001 uptake \
    && mkdir -p /var/lib/uptake /var/lib/mlflow/artifacts /var/lib/mlflow/auth /var/cache/huggingface \
    && chown -R uptake /var/lib/uptake /var/lib/mlflow /var/cache/huggingface
USER uptake

ENTRYPOINT ["uptake"]
CMD ["status"]
