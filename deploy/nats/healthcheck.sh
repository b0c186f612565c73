#!/bin/bash
# Health check of the nats image: nats-server's /healthz on the monitoring port (8222), which
# answers 200 once the server and JetStream are ready (on a cluster: JetStream has a leader).
exec 3<>/dev/tcp/127.0.0.1/8222 || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -n 1 <&3 | grep -q ' 200 '
