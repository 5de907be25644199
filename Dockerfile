# newswatch inside the official Airflow image (used by docker-compose.yml for every Airflow
# component). The tag's Airflow version must match the apache-airflow pin in requirements.txt,
# so installing the requirements never up- or downgrades Airflow itself.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# 1. torch from the PyTorch CPU index, first: requirements.txt leaves torch out, and resolving
#    it from PyPI would pull the CUDA build (several GB of GPU libraries a CPU host never uses).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# 2. The pinned runtime dependencies (sentence-transformers then finds torch already there).
USER root
RUN mkdir -p /opt/newswatch && chown airflow:0 /opt/newswatch
USER airflow
COPY --chown=airflow:0 requirements.txt /opt/newswatch/requirements.txt
RUN pip install -r /opt/newswatch/requirements.txt

# 3. The project itself, without dependencies (all pinned above). dags/, plugins/ and config/
#    are mounted by docker-compose.yml, so editing a DAG needs no rebuild.
COPY --chown=airflow:0 pyproject.toml README.md /opt/newswatch/
COPY --chown=airflow:0 pipeline /opt/newswatch/pipeline
RUN pip install --no-deps /opt/newswatch \
    && python -c "import pipeline.cli, torch; assert torch.version.cuda is None, 'not the CPU build'"
