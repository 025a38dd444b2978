# syntax=docker/dockerfile:1
# The bbrunner image: one static binary on distroless, running as non-root.
# Build: docker build -t bbrunner .
FROM rust:1.95-alpine AS build
# musl for a static binary; cmake, perl and clang for aws-lc (TLS crypto) on musl.
RUN apk add --no-cache musl-dev cmake make perl clang
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bbrunner \
    && strip target/release/bbrunner

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/bbrunner /bbrunner
USER 65532:65532
ENTRYPOINT ["/bbrunner"]
CMD ["operator"]
