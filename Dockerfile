# probe in a container: docker build -t probe . && docker run --rm -v probe-results:/data probe
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 probe
WORKDIR /app
COPY pyproject.toml README.md ./
COPY probe ./probe
COPY targets ./targets
RUN pip install --no-cache-dir . && mkdir /data && chown probe:probe /data

USER probe
ENV PROBE_DB=/data/probe.db
VOLUME ["/data"]
ENTRYPOINT ["probe"]
CMD ["check", "targets/kg.txt"]
