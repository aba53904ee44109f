# The reference worker image: drover's static binary and nothing else.
# `make image` builds it with bin/image/ as the context, which holds
# bin/image/drover from `CGO_ENABLED=0 go build ./cmd/drover`; the docker
# runtime's tests build it the same way. Nothing is pulled: FROM scratch.
FROM scratch
COPY drover /drover
# No user database in scratch: the numeric nobody.
USER 65534:65534
# The farm sets DROVER_PORT and reaches the worker at the container's address.
ENTRYPOINT ["/drover", "worker", "--host", "0.0.0.0"]
