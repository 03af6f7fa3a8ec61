# personaflow worker image (also runs the CLI: `docker run IMAGE tail outbox`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY tables ./tables
COPY engine ./engine
COPY agents ./agents
COPY audit ./audit
COPY personaflow ./personaflow
RUN pip install --no-cache-dir .
ENV PERSONAFLOW_DATA_DIR=/var/lib/personaflow \
    PERSONAFLOW_STORE=rocksdb:// \
    PERSONAFLOW_WEB_BIND=0.0.0.0
VOLUME /var/lib/personaflow
EXPOSE 6066
ENTRYPOINT ["personaflow"]
CMD ["worker"]
