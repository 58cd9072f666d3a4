#!/usr/bin/env bash
# A three-node Apache Kafka 4.1 cluster (KRaft, each node a combined
# controller + broker) on 127.0.0.1, for make kafka-up / kafka-down /
# test-kafka and the failover tests.
#
# Usage: scripts/kafka-cluster.sh up | down | status | bootstrap
#                                 | stop N | kill N | start N
#
#   up         fetch the jars (once), format storage (once), start every node
#              that is not running, wait until a replicated test topic has a
#              leader and a full ISR, print the bootstrap list. A running
#              cluster is left as it is.
#   down       SIGTERM every node at once, wait, SIGKILL what is left after
#              the deadline, and delete the run directory (the next up is fresh).
#   stop N     SIGTERM node N (1-3) by its pid and wait until it has exited.
#              The last running node cannot shut down cleanly (no controller
#              quorum left) and is killed after KAFKA_CLUSTER_TIMEOUT: use kill.
#   kill N     SIGKILL node N by its pid and wait until it has gone.
#   start N    start node N again on its existing storage; returns once its
#              broker port accepts connections. Another node must be running
#              (every node is a controller: alone it has no quorum); to start
#              a stopped cluster, run up.
#   status     one line per node: id, pid, running or stopped, ports.
#   bootstrap  print the bootstrap list.
#
# Interface for tests (internal/kafkatest reads it):
#   $KAFKA_CLUSTER_DIR/bootstrap          the bootstrap list, one line
#   $KAFKA_CLUSTER_DIR/nodeN/kafka.pid    node N's pid while it runs (absent when stopped)
#   $KAFKA_CLUSTER_DIR/nodeN/server.log   node N's log
#   $KAFKA_CLUSTER_DIR/nodeN/data         node N's log.dirs
#   node N listens on 127.0.0.1:$((KAFKA_CLUSTER_PORT+N-1)) (clients) and
#   127.0.0.1:$((KAFKA_CLUSTER_PORT+100+N-1)) (controller quorum).
# Processes are signalled only by the pid in their pid file, after checking
# that the pid still runs this node's kafka.Kafka; never by name.
# The run directory is private: created 0700, and refused when it is a
# symlink or belongs to another user (a shared /tmp lets anyone plant one);
# every file the script writes is readable by its owner only.
#
# Environment (all optional):
#   KAFKA_CLUSTER_DIR      run directory    ${TMPDIR:-/tmp}/orders-service-kafka
#   KAFKA_CLUSTER_PORT     first client port (ports N..N+2 and N+100..N+102)  19092
#   KAFKA_CLUSTER_HEAP     each node's -Xmx  384m
#   KAFKA_CLUSTER_TIMEOUT  seconds to wait for the cluster or a node  180
#   KAFKA_LIBS_DIR         the jars   ${XDG_CACHE_HOME:-~/.cache}/orders-service/kafka-<version>/libs
#   KAFKA_CLUSTER_SECURE   true: the up that formats the cluster also opens a SASL_SSL
#                          listener on node N at 127.0.0.1:$((KAFKA_CLUSTER_PORT+200+N-1)):
#                          SCRAM (SHA-512 or SHA-256) and a client certificate (mTLS) both required;
#                          PLAIN for the same user too (for kcat, whose librdkafka 2.0.2 fails SCRAM).
#                          openssl makes the certificates; the tests read
#                          $KAFKA_CLUSTER_DIR/secure_bootstrap and $KAFKA_CLUSTER_DIR/pki/
#                          (ca.crt, client.crt, client.key, scram-user, scram-password).
#                          ACLs are enforced (StandardAuthorizer): the PLAINTEXT listener's
#                          ANONYMOUS and the SCRAM user are super users; a second SCRAM user
#                          (pki/limited-user, pki/limited-password) is granted, with Kafka's
#                          own AclCommand, READ, WRITE and DESCRIBE on every topic, READ and
#                          DESCRIBE on every group, WRITE and DESCRIBE on every transactional
#                          id and IDEMPOTENT_WRITE: no CREATE.
set -euo pipefail
umask 077

root=$(cd "$(dirname "$0")/.." && pwd)
pom=$root/deploy/kafka/pom.xml
template=$root/deploy/kafka/server.properties
log4j=$root/deploy/kafka/log4j2.properties
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")

# Absolute and cleaned, but symlinks are not resolved: private_dir refuses one.
dir=$(realpath -m -s -- "${KAFKA_CLUSTER_DIR:-${TMPDIR:-/tmp}/orders-service-kafka}")
port=${KAFKA_CLUSTER_PORT:-19092}
heap=${KAFKA_CLUSTER_HEAP:-384m}
timeout=${KAFKA_CLUSTER_TIMEOUT:-180}
libs=${KAFKA_LIBS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orders-service/kafka-$version/libs}
nodes=(1 2 3)
check_topic=_orders_cluster_check

die() { echo "kafka-cluster: $*" >&2; exit 1; }

case $port in '' | *[!0-9]*) die "KAFKA_CLUSTER_PORT: want a port number, got \"$port\"" ;; esac
case $timeout in '' | *[!0-9]*) die "KAFKA_CLUSTER_TIMEOUT: want whole seconds, got \"$timeout\"" ;; esac
((port >= 1024 && port + 102 <= 65535)) || die "KAFKA_CLUSTER_PORT: want 1024 to 65433, got $port"

broker_port() { echo $((port + $1 - 1)); }
controller_port() { echo $((port + 100 + $1 - 1)); }
bootstrap() {
	local n list=
	for n in "${nodes[@]}"; do list+=${list:+,}127.0.0.1:$(broker_port "$n"); done
	echo "$list"
}
voters() {
	local n list=
	for n in "${nodes[@]}"; do list+=${list:+,}$n@127.0.0.1:$(controller_port "$n"); done
	echo "$list"
}
node_arg() {
	case ${1:-} in 1 | 2 | 3) ;; *) die "want a node number 1, 2 or 3, got \"${1:-}\"" ;; esac
}

# private_dir refuses a run directory that is a symlink or owned by another
# user, and keeps it 0700; with "create" it makes a missing one (0700).
private_dir() {
	local owner
	[ -L "$dir" ] && die "run directory $dir is a symlink: refused (remove it, or set KAFKA_CLUSTER_DIR to a directory of your own)"
	if [ ! -e "$dir" ]; then
		[ "${1:-}" = create ] || return 0
		mkdir -p -- "$(dirname -- "$dir")"
		mkdir -m 700 -- "$dir" || die "cannot create run directory $dir"
	fi
	[ -d "$dir" ] && [ ! -L "$dir" ] || die "run directory $dir is not a directory: refused"
	owner=$(stat -c %u -- "$dir")
	[ "$owner" = "$(id -u)" ] || die "run directory $dir is owned by uid $owner, not by you (uid $(id -u)): refused"
	chmod 700 -- "$dir"
}

java_run() { java -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$log4j" "$@"; }

fetch_libs() {
	[ -f "$libs/.complete" ] && return
	echo "fetching Apache Kafka $version jars with Maven into $libs"
	mkdir -p "$libs"
	if ! mvn -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >"$libs/mvn.log" 2>&1; then
		tail -20 "$libs/mvn.log" >&2
		die "mvn could not fetch Apache Kafka $version (Maven Central reachable? see $pom and $libs/mvn.log)"
	fi
	touch "$libs/.complete"
}

# pid of node N when it runs, else nothing (a stale pid file is removed).
node_pid() {
	local f=$dir/node$1/kafka.pid pid
	[ -f "$f" ] || return 0
	pid=$(<"$f")
	# Its command line must end in this node's "kafka.Kafka <properties>".
	if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
		[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | tail -n 2 | tr '\n' ' ')" = "kafka.Kafka $dir/node$1/server.properties " ]; then
		echo "$pid"
	else
		rm -f "$f"
	fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

configure() {
	local n=$1 d=$dir/node$1
	mkdir -p "$d/data"
	sed -e "s|@NODE_ID@|$n|" -e "s|@QUORUM_VOTERS@|$(voters)|" \
		-e "s|@BROKER_PORT@|$(broker_port "$n")|" -e "s|@CONTROLLER_PORT@|$(controller_port "$n")|" \
		-e "s|@DATA_DIR@|$d/data|" "$template" >"$d/server.properties"
	[ -f "$dir/secure" ] && secure_configure "$n"
	return 0
}

secure_port() { echo $((port + 200 + $1 - 1)); }
secure_bootstrap() {
	local n list=
	for n in "${nodes[@]}"; do list+=${list:+,}127.0.0.1:$(secure_port "$n"); done
	echo "$list"
}

# make_pki writes a CA, a broker and a client certificate (PKCS#8 keys, for
# Kafka's PEM key stores) and the SCRAM user's name and password.
make_pki() {
	local p=$dir/pki name
	[ -f "$p/.complete" ] && return
	command -v openssl >/dev/null || die "openssl not found (KAFKA_CLUSTER_SECURE=true needs it)"
	mkdir -p "$p"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=orders-service test CA" \
		-keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null || die "openssl: CA certificate"
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$p/san.ext"
	for name in broker client; do
		openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$p/$name.raw.key" -out "$p/$name.csr" 2>/dev/null &&
			openssl pkcs8 -topk8 -nocrypt -in "$p/$name.raw.key" -out "$p/$name.key" &&
			openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
				-extfile "$p/san.ext" -out "$p/$name.crt" 2>/dev/null || die "openssl: $name certificate"
	done
	cat "$p/broker.key" "$p/broker.crt" >"$p/broker.pem"
	echo orders-service >"$p/scram-user"
	openssl rand -hex 16 >"$p/scram-password"
	echo orders-limited >"$p/limited-user"
	openssl rand -hex 16 >"$p/limited-password"
	touch "$p/.complete"
}

secure_configure() {
	local n=$1 f=$dir/node$1/server.properties sp
	sp=$(secure_port "$n")
	sed -i -e "s|^listeners=.*|&,SASL_SSL://127.0.0.1:$sp|" -e "s|^advertised.listeners=.*|&,SASL_SSL://127.0.0.1:$sp|" \
		-e "s|^listener.security.protocol.map=.*|&,SASL_SSL:SASL_SSL|" "$f"
	cat >>"$f" <<EOF

# KAFKA_CLUSTER_SECURE=true: SCRAM over TLS with client certificates. PLAIN
# (same user, over the same TLS) is for kcat: Debian's librdkafka 2.0.2 sends
# a SCRAM client-final-message that Kafka 4 rejects (fixed in librdkafka 2.6.1).
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$(<"$dir/pki/scram-user")="$(<"$dir/pki/scram-password")";
listener.name.sasl_ssl.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$dir/pki/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/pki/ca.crt
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$(<"$dir/pki/scram-user")
EOF
}

# grant_limited gives the limited SCRAM user what a service is granted on
# managed Kafka, with Kafka's own AclCommand: no CREATE anywhere.
grant_limited() {
	local who
	who=User:$(<"$dir/pki/limited-user")
	acl() {
		java_run org.apache.kafka.tools.AclCommand --bootstrap-server "$(bootstrap)" --add --allow-principal "$who" "$@" >/dev/null ||
			die "AclCommand $* failed"
	}
	acl --operation Read --operation Write --operation Describe --topic '*'
	acl --operation Read --operation Describe --group '*'
	acl --operation Write --operation Describe --transactional-id '*'
	acl --operation IdempotentWrite --cluster
}

format() {
	local n id
	[ -f "$dir/cluster.id" ] || java_run kafka.tools.StorageTool random-uuid >"$dir/cluster.id"
	id=$(<"$dir/cluster.id")
	for n in "${nodes[@]}"; do
		[ -f "$dir/node$n/data/meta.properties" ] && continue
		configure "$n"
		scram=()
		if [ -f "$dir/secure" ]; then
			for m in SCRAM-SHA-512 SCRAM-SHA-256; do
				scram+=(--add-scram "$m=[name=$(<"$dir/pki/scram-user"),password=$(<"$dir/pki/scram-password")]")
				scram+=(--add-scram "$m=[name=$(<"$dir/pki/limited-user"),password=$(<"$dir/pki/limited-password")]")
			done
		fi
		java_run kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$dir/node$n/server.properties" "${scram[@]}" >/dev/null ||
			die "formatting node $n's storage failed"
	done
}

# log_from is the size of the node's log before its last launch: wait_port
# shows only what that start wrote.
log_from=0

launch() {
	local n=$1 d=$dir/node$1 pid
	log_from=$(stat -c %s "$d/server.log" 2>/dev/null || echo 0)
	[ -n "$(node_pid "$n")" ] && return
	port_open "$(broker_port "$n")" && die "port $(broker_port "$n") is taken by another process (set KAFKA_CLUSTER_PORT)"
	configure "$n"
	# setsid: the node outlives the shell (or test) that started it.
	setsid java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$log4j" -cp "$libs/*" \
		kafka.Kafka "$d/server.properties" >>"$d/server.log" 2>&1 </dev/null &
	pid=$!
	# Until the child has exec'd setsid its command line is this shell's,
	# which node_pid would take for a node that exited.
	for _ in {1..100}; do
		grep -qa kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "$pid" >"$d/kafka.pid"
}

# wait_port waits until node N listens; it fails (status 1) with the end of
# the node's log when the node exits first, and dies past the timeout.
wait_port() {
	local n=$1 deadline=$((SECONDS + timeout))
	until port_open "$(broker_port "$n")"; do
		if [ -z "$(node_pid "$n")" ]; then
			echo "kafka-cluster: node $n exited while starting; its errors in $dir/node$n/server.log:" >&2
			tail -c +"$((log_from + 1))" "$dir/node$n/server.log" | grep -E 'ERROR|FATAL|Caused by' | tail -n 8 >&2 || true
			return 1
		fi
		((SECONDS < deadline)) || die "node $n did not listen on $(broker_port "$n") within ${timeout}s; see $dir/node$n/server.log"
		sleep 0.5
	done
}

# start_node launches node N and waits for it, once more if it exits while
# starting (its log's end is printed either way).
start_node() {
	local n=$1
	launch "$n"
	wait_port "$n" && return
	echo "kafka-cluster: starting node $n again" >&2
	launch "$n"
	wait_port "$n" || die "node $n exited while starting, twice; see $dir/node$n/server.log"
}

# Waits until the check topic (replication 3) exists and every partition has
# a leader and all three replicas in sync, and a transaction commits.
wait_ready() {
	local deadline=$((SECONDS + timeout)) out
	while :; do
		java_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" --create --if-not-exists \
			--topic "$check_topic" --partitions 3 --replication-factor 3 >/dev/null 2>&1 || true
		out=$(java_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" --describe --topic "$check_topic" 2>/dev/null || true)
		if [ "$(grep -cE 'Leader: [0-9]+.*Isr: [0-9]+,[0-9]+,[0-9]+' <<<"$out")" = 3 ]; then
			break
		fi
		((SECONDS < deadline)) || die "no leader with a full ISR for $check_topic within ${timeout}s; see $dir/node*/server.log"
		sleep 1
	done
	# One committed transaction, so the transaction coordinator's
	# __transaction_state exists before anyone measures: on a fresh cluster
	# the first transactional producer otherwise waits seconds for it.
	while ! java_run org.apache.kafka.tools.ProducerPerformance --topic "$check_topic" --num-records 1 --record-size 16 \
		--throughput -1 --transactional-id "$check_topic" --transaction-duration-ms 100 \
		--producer-props "bootstrap.servers=$(bootstrap)" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "no Kafka transaction committed within ${timeout}s; see $dir/node*/server.log"
		sleep 1
	done
}

signal_node() {
	local sig=$1 n=$2 pid deadline
	pid=$(node_pid "$n")
	if [ -z "$pid" ]; then
		echo "node $n is not running"
		return
	fi
	kill -"$sig" "$pid"
	deadline=$((SECONDS + timeout))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			echo "node $n (pid $pid) ignored SIG$sig for ${timeout}s: SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			sig=KILL deadline=$((SECONDS + timeout))
		fi
		sleep 0.2
	done
	rm -f "$dir/node$n/kafka.pid"
	echo "node $n (pid $pid) stopped by SIG$sig"
}

status() {
	local n pid
	for n in "${nodes[@]}"; do
		pid=$(node_pid "$n")
		printf 'node %s  pid %-8s %-8s client 127.0.0.1:%s  controller 127.0.0.1:%s\n' "$n" "${pid:--}" \
			"$([ -n "$pid" ] && echo running || echo stopped)" "$(broker_port "$n")" "$(controller_port "$n")"
	done
}

cmd=${1:-}
case $cmd in
up) private_dir create ;;
down | stop | kill | start | status) private_dir ;;
esac
case $cmd in
up)
	running=0
	for n in "${nodes[@]}"; do [ -n "$(node_pid "$n")" ] && running=$((running + 1)); done
	if ((running == ${#nodes[@]})); then
		echo "Kafka cluster already running in $dir"
		bootstrap >"$dir/bootstrap"
		echo "bootstrap: $(bootstrap)"
		exit 0
	fi
	command -v java >/dev/null || die "java not found (Java 17 is needed)"
	fetch_libs
	if [ "${KAFKA_CLUSTER_SECURE:-}" = true ]; then
		[ -f "$dir/cluster.id" ] && [ ! -f "$dir/secure" ] && die "KAFKA_CLUSTER_SECURE=true: $dir was formatted without it; run down first"
		((port + 202 <= 65535)) || die "KAFKA_CLUSTER_PORT: want at most 65333 with KAFKA_CLUSTER_SECURE, got $port"
		touch "$dir/secure"
		make_pki
		secure_bootstrap >"$dir/secure_bootstrap"
	fi
	format
	for n in "${nodes[@]}"; do launch "$n"; done
	for n in "${nodes[@]}"; do wait_port "$n" || die "node $n exited while starting; see $dir/node$n/server.log"; done
	wait_ready
	if [ -f "$dir/secure" ]; then grant_limited; fi
	bootstrap >"$dir/bootstrap"
	status
	echo "Apache Kafka $version, 3 nodes, data in $dir"
	echo "bootstrap: $(bootstrap)"
	;;
down)
	# All nodes at once: a node stopped after the others would wait for a
	# controller quorum that is gone.
	for n in "${nodes[@]}"; do signal_node TERM "$n" & done
	wait
	rm -rf "$dir"
	echo "Kafka cluster stopped; $dir removed"
	;;
stop)
	node_arg "${2:-}"
	signal_node TERM "$2"
	;;
kill)
	node_arg "${2:-}"
	signal_node KILL "$2"
	;;
start)
	node_arg "${2:-}"
	[ -f "$dir/node$2/data/meta.properties" ] || die "node $2 has no storage in $dir: run up first"
	others=0
	for n in "${nodes[@]}"; do [ "$n" != "$2" ] && [ -n "$(node_pid "$n")" ] && others=$((others + 1)); done
	# Every node is a controller too: alone, one cannot reach the quorum.
	((others > 0)) || die "start $2: no other node runs, so it cannot reach the controller quorum; run up"
	start_node "$2"
	echo "node $2 (pid $(node_pid "$2")) listening on 127.0.0.1:$(broker_port "$2")"
	;;
status) status ;;
bootstrap) bootstrap ;;
*) die "usage: $0 up | down | status | bootstrap | stop N | kill N | start N" ;;
esac
