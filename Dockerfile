# probe in a container. Build: docker build -t probe .
# Once, consent and configuration in the volume:
#   docker run --rm -it -v probe-data:/data probe init
#   (or, unattended: docker run --rm -v probe-data:/data probe init --yes --targets /app/targets/kg.txt)
# Then a run (by hand, or from the host's cron or a systemd timer):
#   docker run --rm -v probe-data:/data probe check --quiet
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 probe
WORKDIR /app
COPY pyproject.toml README.md LICENSE NOTICE ./
COPY probe ./probe
COPY targets ./targets
RUN pip install --no-cache-dir . && mkdir /data && chown probe:probe /data

USER probe
# Results and the configuration (with the volunteer's consent) live in the volume.
ENV PROBE_CONFIG=/data/config.toml \
    PROBE_DB=/data/probe.db \
    XDG_DATA_HOME=/data
VOLUME ["/data"]
# docker stop sends SIGTERM: the run stops cleanly and is marked "interrupted".
STOPSIGNAL SIGTERM
ENTRYPOINT ["probe"]
CMD ["check", "--quiet"]
