# syntax=docker/dockerfile:1
# The operator image: a static-enough release binary on distroless, non-root.

FROM rust:1.95-bookworm AS build
# libclang for the SQL parser's bindings (pg_query); bookworm's clang 14.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Workspace members the manifest names (test support, not built into the image).
COPY benches ./benches
COPY dsql-sim ./dsql-sim
RUN cargo build --release --locked --bin identity-migrator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/identity-migrator /usr/local/bin/identity-migrator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/identity-migrator"]
CMD ["controller"]
