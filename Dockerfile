# meshmirror's container image. Not built on the project's machines (they
# have no container engine); see docs/operations.md, "The container image".
#
#   docker build -t REGISTRY/meshmirror:TAG .
#
# The builder is Debian 12 (bookworm) to match the glibc of the runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The three clouds, without the demo (which would bring the fake API server).
RUN cargo build --release --locked --bin meshmirror \
        --no-default-features --features aws,gcp,azure \
    && install -D -m 0755 target/release/meshmirror /out/meshmirror

# glibc, libgcc, CA certificates and nothing else; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshmirror /usr/local/bin/meshmirror
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/meshmirror"]
CMD ["run", "--metrics-addr=0.0.0.0:9090"]
