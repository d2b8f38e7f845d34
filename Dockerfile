# The blackstart image: the CLI, whose `operator` command the Deployment in
# manifests/operator/ runs. Built in one stage, shipped in a distroless one
# that has no shell and runs as a non-root user.
#
#   docker build -t ghcr.io/blackstart-dev/blackstart:0.1.0 .
#   kind load docker-image ghcr.io/blackstart-dev/blackstart:0.1.0
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p blackstart \
 && cp target/release/blackstart /blackstart

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /blackstart /usr/local/bin/blackstart
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/blackstart"]
CMD ["operator"]
