# fanout's container images, on Debian 12 (bookworm) like the machines fanout is developed on.
#
#   docker build -t fanout .                    the service: the last stage, `runtime`
#   docker build --target wrk -t fanout-wrk .   the wrk load generator of the compose `bench` profile
#
# docker-compose.yml builds both. No Docker engine runs on the project's machines, so
# scripts/check-container.sh checks this file offline (dockerfilelint, COPY sources, runtime libraries).

# build: compile build/fanout with the same `make` as on a developer's machine.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libevent-dev libjansson-dev libpq-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `make` reads. .dockerignore keeps build/ (host objects) and var/ out of the context.
COPY Makefile VERSION ./
COPY config/ config/
COPY db/ db/
COPY http/ http/
COPY service/ service/
RUN make -j"$(nproc)" && build/fanout --version

# wrk: Debian's wrk, the load generator; docker-compose.yml mounts the scripts of bench/wrk.
FROM debian:bookworm-slim AS wrk
RUN apt-get update \
 && apt-get install -y --no-install-recommends wrk \
 && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["wrk"]

# runtime: the binary, the shared libraries it links (check-container.sh compares this list with
# the binary's) and nothing else: no compiler, no shell tools, no curl.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-openssl-2.1-7 libjansson4 libpq5 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 fanout \
 && useradd --uid 10001 --gid fanout --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fanout
COPY --from=build /src/build/fanout /usr/local/bin/fanout
# Numeric, so that an orchestrator can see it is not root (Kubernetes runAsNonRoot).
USER 10001:10001
# Inside a container, listen on every interface: the port is published, or reached by other containers.
ENV FANOUT_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `fanout --healthcheck` probes /readyz on FANOUT_LISTEN and exits 0 or 1, so the image needs no curl.
# No --start-period: fanout is up within milliseconds (and dockerfilelint 1.8.0 rejects that option).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["fanout", "--healthcheck"]
ENTRYPOINT ["fanout"]
