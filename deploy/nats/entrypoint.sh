#!/bin/sh
# Entrypoint of shoal's nats-server image. nats-server.conf reads each role's password from
# SHOAL_NATS_PASSWORD_<ROLE>; here each may come from a file named by
# SHOAL_NATS_PASSWORD_<ROLE>_FILE (a compose or Kubernetes secret). Read as root, since
# secrets keep their host owner and mode 0600, then run nats-server as the nats user.
set -eu
for role in PLANNER GENERATOR EVALUATOR ARCHIVE SEEDER ADMIN; do
	eval "file=\${SHOAL_NATS_PASSWORD_${role}_FILE:-}"
	if [ -n "$file" ]; then
		pw=$(cat "$file")
		# Quoted: nats-server parses a variable's value as config, and an unquoted value
		# starting with a digit is read as a number ("Expected a digit but got 'f'").
		export "SHOAL_NATS_PASSWORD_${role}=\"$pw\""
		unset "SHOAL_NATS_PASSWORD_${role}_FILE"
	fi
done
if [ "$(id -u)" = 0 ]; then
	chown -R nats:nats /data
	exec setpriv --reuid=nats --regid=nats --init-groups nats-server "$@"
fi
exec nats-server "$@"
