# syntax=docker/dockerfile:1
# Parley's CPU image: the gateway (`parley serve`, the default command), the Celery train worker
# (`parley worker --queues cpu`) and the operator commands (`parley db upgrade`, `parley demo
# create`, ...). docker-compose.yml builds it; alone:
#
#   docker build -t parley .
#   docker run -p 8000:8000 parley          # embedded: SQLite, local files, the demo tenant
#
# Every Python package is pinned by constraints.txt. torch comes from PyTorch's CPU wheel index
# (the pinned version with the +cpu label: no CUDA libraries in this image; Dockerfile.gpu has
# them); build with --build-arg TORCH_INDEX_URL= to take PyPI's wheel instead.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment in /opt/parley ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers and headers for any dependency without a wheel for this platform (tesserocr
# links Tesseract); none of them reach the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config libtesseract-dev libleptonica-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/parley
ENV PATH=/opt/parley/bin:${PATH}
WORKDIR /src
# The dependencies first (a layer that changes only with pyproject.toml or constraints.txt) ...
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -c constraints.txt -r requirements.txt
# ... then Parley itself.
COPY LICENSE ./
COPY core core
COPY training training
COPY nlu nlu
COPY vision vision
COPY connectors connectors
COPY bot_gateway bot_gateway
COPY console console
COPY parley parley
RUN pip install --no-deps -c constraints.txt . \
    && python -c "import parley, bot_gateway, nlu, training, vision"

# --- the image ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# Tesseract's English model (the `tesseract` OCR engine reads it from
# /usr/share/tesseract-ocr/5/tessdata); libglib for OpenCV (RapidOCR).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /var/lib/parley --create-home \
        --shell /usr/sbin/nologin parley
COPY --from=build /opt/parley /opt/parley
ENV PATH=/opt/parley/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    TOKENIZERS_PARALLELISM=false \
    PARLEY_DATA_DIR=/var/lib/parley
WORKDIR /var/lib/parley
USER parley
EXPOSE 8000
# The gateway's health route; docker-compose.yml gives workers and one-shot jobs their own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=4)"]
CMD ["parley", "serve", "--host", "0.0.0.0", "--port", "8000"]
