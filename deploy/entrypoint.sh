#!/bin/sh
# Entrypoint of shoal's service images. Compose secrets are bind mounts that keep their host
# owner and mode 0600, so only root reads them in the container: as root, copy the role's
# password to a file of the service user, then run the service as that user (PID 1 stays the
# service, so SIGTERM from `docker stop` reaches it).
set -eu
if [ "$(id -u)" = 0 ]; then
	if [ -n "${SHOAL_NATS_PASSWORD_FILE:-}" ] && [ -f "$SHOAL_NATS_PASSWORD_FILE" ]; then
		install -d -m 0700 -o shoal -g shoal /run/shoal
		install -m 0400 -o shoal -g shoal "$SHOAL_NATS_PASSWORD_FILE" /run/shoal/nats.password
		export SHOAL_NATS_PASSWORD_FILE=/run/shoal/nats.password
	fi
	export HOME=/var/lib/shoal
	exec setpriv --reuid=shoal --regid=shoal --init-groups "$@"
fi
exec "$@"
