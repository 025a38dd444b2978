#!/bin/sh
# bbrunner's docker service for Bitbucket Pipelines steps: dockerd with the step's DOCKER_OPTS
# (`definitions.services.docker.variables`), and, when they give no --mtu, this container's own
# eth0 MTU, so that the containers a step starts never get a larger MTU than the network the
# runner put the step on.
set -eu
opts="${DOCKER_OPTS:-}"
case " $opts " in
*" --mtu="*) mtu="$(echo " $opts " | sed 's/.* --mtu=\([0-9]*\).*/\1/')" ;;
*)
	mtu="$(cat /sys/class/net/eth0/mtu)"
	opts="--mtu=$mtu $opts"
	;;
esac
# User-defined networks (docker compose makes them) follow too, where this dockerd can: the
# flag is tested, as Docker before 24 refuses it.
case " $opts " in
*" --default-network-opt"*) ;;
*)
	if dockerd --help 2>&1 | grep -q -- --default-network-opt; then
		opts="$opts --default-network-opt=bridge=com.docker.network.driver.mtu=$mtu"
	fi
	;;
esac
echo "bbrunner docker service: dockerd $opts" >&2
# The build container reaches the service on localhost:2375 without TLS, as with Bitbucket's
# own docker service; nothing outside the step's network namespace can.
set -- dockerd --host=unix:///var/run/docker.sock --host=tcp://127.0.0.1:2375 --tls=false "$@"
# The docker:dind entrypoint prepares cgroups and mounts for a nested daemon, where present.
if command -v dockerd-entrypoint.sh >/dev/null 2>&1; then
	set -- dockerd-entrypoint.sh "$@"
fi
# DOCKER_OPTS is a list of flags: split on purpose.
# shellcheck disable=SC2086
exec "$@" $opts
