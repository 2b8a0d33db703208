# Multi-stage build: compile in the Rust image, run on a distroless base as
# a non-root user (uid 65532, as in config/k8s/deployment.yaml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin switchyard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config/switchyard.toml /etc/switchyard/switchyard.toml
USER 65532:65532
# 6432: PostgreSQL clients; 9930: /metrics /healthz /readyz /topology.
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--config", "/etc/switchyard/switchyard.toml"]
