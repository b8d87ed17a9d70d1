# One image for the API, the worker and the migrations. CPU torch by default; the GPU
# profile in docker-compose.yml builds with TORCH_INDEX=https://download.pytorch.org/whl/cu124.
FROM python:3.11-slim
ARG TORCH_SPEC="torch>=2.4,<3"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY models models
COPY worker worker
COPY api api
COPY cli cli
COPY client client
COPY migrations migrations
COPY examples examples
RUN pip install --no-cache-dir ./client && pip install --no-cache-dir -e ".[mnist]" && useradd --create-home fitserve && mkdir -p /data && chown fitserve /data
USER fitserve
ENV FITSERVE_DATA_DIR=/data
EXPOSE 8000
CMD ["fitserve", "api", "--host", "0.0.0.0", "--port", "8000"]
