# Dockerfile - pgsluice in a container (docs/deploy.md).
#
#   docker build -t pgsluice .
#   docker run -e PGSLUICE_DB_APP="host=db dbname=app" -e PGSLUICE_AUTH_USERS=app:secret \
#       -p 6432:6432 -p 9127:9127 pgsluice
#
# Configuration: mount an ini at /etc/pgsluice/pgsluice.ini, or set PGSLUICE_*
# variables and deploy/docker-entrypoint.sh writes one. The usage journal is
# in /var/lib/pgsluice/journal: give it a volume so records not yet stored in
# PostgreSQL survive a container replacement.

# ---- build: compile and install into /out ----
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential autoconf automake \
        pkg-config libevent-dev libpq-dev libssl-dev libinih-dev libisal-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN autoreconf -fi \
 && mkdir -p build-image && cd build-image \
 && ../configure -q --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
        --without-systemd --with-systemdsystemunitdir=no \
 && make -j"$(nproc)" \
 && make install DESTDIR=/out \
 && mv /out/etc/pgsluice/pgsluice.ini /out/usr/share/doc/pgsluice/pgsluice.ini.example \
 && install -m 0755 ../deploy/docker-entrypoint.sh /out/usr/local/bin/docker-entrypoint.sh

# ---- run: the libraries, the binary, a user ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-openssl-2.1-7 \
        libpq5 libssl3 libinih1 libisal2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 999 pgsluice \
 && useradd --system --uid 999 --gid pgsluice --home-dir /var/lib/pgsluice --shell /usr/sbin/nologin pgsluice \
 && install -d -o pgsluice -g pgsluice -m 0700 /var/lib/pgsluice /var/lib/pgsluice/journal \
 && install -d -o pgsluice -g pgsluice -m 0750 /etc/pgsluice
COPY --from=build /out/ /
USER pgsluice
VOLUME ["/var/lib/pgsluice/journal"]
EXPOSE 6432 9127
# SIGINT, as the systemd unit: wait until no server connection is in use,
# store the usage records, exit (SIGTERM would wait for every client).
STOPSIGNAL SIGINT
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["docker-entrypoint.sh", "healthcheck"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD []
