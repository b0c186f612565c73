#!/bin/sh
# Health check of shoal's service images: healthy while the service holds an established TCP
# connection to NATS (the port of SHOAL_NATS_URL). A service that cannot connect exits, and
# one whose connection drops keeps reconnecting: either shows here within one interval. The
# container's network namespace holds only this service's sockets.
url=${SHOAL_NATS_URL:-nats://127.0.0.1:4222}
port=${url##*:}
port=${port%%/*}
hex=$(printf '%04X' "$port")
exec awk -v p=":$hex" 'FNR > 1 && substr($3, length($3) - 4) == p && $4 == "01" { found = 1; exit }
	END { exit !found }' /proc/net/tcp /proc/net/tcp6
