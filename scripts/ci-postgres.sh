#!/usr/bin/env bash
# Installs (if missing) and starts Debian's PostgreSQL with trust auth for
# loopback TCP, so tests can connect as user postgres without a password.
# Idempotent: a machine that already has it running is left as it is.
# Needs root (CI machines run as root); developers without root use the
# embedded PostgreSQL that `make test` starts instead.
set -euo pipefail

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
	echo "PostgreSQL already answers on 127.0.0.1:5432"
	exit 0
fi

if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
	echo "installing Debian's postgresql package"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -1)
conf=/etc/postgresql/$version/main
hba=$conf/pg_hba.conf
if ! grep -q '^# orders-service: trust loopback' "$hba"; then
	# Rules match top-down: ours go first.
	{
		echo '# orders-service: trust loopback (tests and local development only)'
		echo 'host all all 127.0.0.1/32 trust'
		echo 'host all all ::1/128 trust'
		cat "$hba"
	} >"$hba.new"
	mv "$hba.new" "$hba"
	chown postgres:postgres "$hba"
fi
# The tests open many connections at once (packages run in parallel).
if ! grep -q '^max_connections = 200' "$conf/postgresql.conf"; then
	echo 'max_connections = 200' >>"$conf/postgresql.conf"
fi

if pg_ctlcluster "$version" main status >/dev/null 2>&1; then
	pg_ctlcluster --skip-systemctl-redirect "$version" main restart
else
	pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 60); do
	pg_isready -q -h 127.0.0.1 -p 5432 && break
	sleep 1
done
psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select version()'
