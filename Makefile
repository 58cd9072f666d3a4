# Tool versions are pinned; `make tools` installs them into ./bin.
BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.6.2

BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

.PHONY: help check-asyncapi check-breaking release release-smoke run build test generate check-generated lint tools bench bench-smoke soak fuzz kafka-up kafka-down test-kafka test-failover

# withpostgres gives a command the PostgreSQL its DSN names, or starts an
# embedded one (github.com/fergusstrange/embedded-postgres) where nothing
# answers on that loopback port (README, "The two commands"). CI installs
# Debian's postgresql package instead (scripts/ci-postgres.sh).
WITHPOSTGRES = go build -o $(BIN)/withpostgres ./cmd/withpostgres && $(BIN)/withpostgres

# A bare `make` prints this list instead of starting anything.
.DEFAULT_GOAL := help

help: ## list the targets with what they do
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_-]+:[^=]*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## start the service locally: embedded Kafka, database created if missing, payments simulator
	go build -o $(BIN)/orders-service ./cmd/orders-service
	$(WITHPOSTGRES) -persist -env POSTGRES_DSN -default 'postgres://postgres@127.0.0.1:5432/orders?sslmode=disable' -- $(BIN)/orders-service -dev

# VERSION is the release tag at HEAD (git describe: vX.Y.Z, or vX.Y.Z-N-gSHA
# after it), or v0.0.0-<sha> before the first tag; -dirty marks local changes.
# Binaries print it with -version; make release names its files after it.
VERSION  ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo "v0.0.0-$$(git describe --always --dirty 2>/dev/null || echo unknown)")
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X github.com/acme/orders-service/internal/buildinfo.version=$(VERSION) -X github.com/acme/orders-service/internal/buildinfo.revision=$(REVISION)

build: ## build every binary in cmd/ into bin/, stamped with VERSION and REVISION
	CGO_ENABLED=0 go build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

test: ## every test, against the local PostgreSQL (or an embedded one) and an in-process Kafka broker
	$(WITHPOSTGRES) -env TEST_POSTGRES_DSN,POSTGRES_DSN -default 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' -- go test -race -count=1 ./...

kafka-up: ## start a three-node Apache Kafka 4.1 cluster on 127.0.0.1:19092-19094 (jars fetched with Maven once)
	scripts/kafka-cluster.sh up

kafka-down: ## stop that cluster and delete its data
	scripts/kafka-cluster.sh down

# Packages whose Kafka tests take KAFKA_TEST_BROKERS: those whose tests import
# internal/kafkatest (derived, so a new suite cannot be left out).
KAFKA_TEST_PKGS = $(shell go list -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./... | awk '/internal\/kafkatest/ {print $$1}')
# The cluster's first port and run directory, for the script (another cluster may hold the defaults).
export KAFKA_CLUSTER_PORT KAFKA_CLUSTER_DIR
# One package at a time (-p 1): three brokers, PostgreSQL and the tests share the machine.
test-kafka: ## the Kafka-facing tests against a three-node Apache Kafka (kafka-up, tests, kafka-down even on failure)
	scripts/kafka-cluster.sh up
	KAFKA_TEST_BROKERS=$$(scripts/kafka-cluster.sh bootstrap) go test -race -count=1 -p 1 $(KAFKA_TEST_PKGS); \
		rc=$$?; scripts/kafka-cluster.sh down; exit $$rc

test-failover: ## failover tests (build tag kafkacluster): brokers and replicas killed by pid on a fresh three-node cluster with a SASL_SSL listener, figures printed
	KAFKA_CLUSTER_SECURE=true scripts/kafka-cluster.sh up
	KAFKA_TEST_BROKERS=$$(scripts/kafka-cluster.sh bootstrap) go test -tags kafkacluster -count=1 -v -timeout 20m -run '^TestCluster' ./cmd/orders-service/; \
		rc=$$?; scripts/kafka-cluster.sh down; exit $$rc

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## install the pinned buf and protoc plugins into bin/

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)

generate: tools ## buf lint, then regenerate gen/orderspb with the pinned plugins
	buf lint
	buf generate

check-generated: generate ## fail when the committed generated code is stale (CI)
	@git diff --exit-code -- gen/ || (echo "generated code is stale: run make generate and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- gen/)" || (echo "generated code is not committed" >&2; exit 1)

lint: tools ## gofmt, go vet, staticcheck, deadcode and buf lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1)
	go vet ./...
	go vet -tags kafkacluster ./...
	go tool staticcheck ./...
	@out=$$(go tool deadcode ./cmd/...) || exit 1; \
		test -z "$$out" || { printf '%s\n' "$$out" "deadcode: functions no command reaches: delete them or use them" >&2; exit 1; }
	buf lint

bench: ## measure the service beside same-run baselines (a few minutes; needs PostgreSQL): prints a table, writes bench/results.json
	go run ./cmd/ordersbench

bench-smoke: ## the benchmark with tiny sizes, so that it cannot rot (CI)
	go run ./cmd/ordersbench -short

SOAK ?= 10m
soak: ## steady load for SOAK against a service with one-minute retention: table sizes, memory and goroutines stay flat
	go run ./cmd/ordersbench -phases soak -soak $(SOAK) -out bench/soak-results.json

check-breaking: tools ## buf breaking: proto/ against the last release tag, or the previous commit while there is none (BREAKING_AGAINST=<ref> for another)
	scripts/check-breaking.sh

# make release: static binaries (CGO_ENABLED=0, -trimpath) of the commands a
# user runs, stamped with VERSION, one archive per platform with LICENSE,
# README.md and CHANGELOG.md, and dist/checksums.txt (SHA-256).
RELEASE_CMDS      := orders-service payments-sim ordersctl
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64
DIST              := dist

release: ## versioned static binaries for RELEASE_PLATFORMS into dist/: an archive per platform and checksums.txt
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; mtime=$$(git log -1 --format=%ct 2>/dev/null || date +%s); \
	for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; name=orders-service_$(VERSION:v%=%)_$${os}_$${arch}; \
		echo "release: $$name"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(DIST)/$$name/ $(addprefix ./cmd/,$(RELEASE_CMDS)); \
		cp LICENSE README.md CHANGELOG.md $(DIST)/$$name/; \
		tar -C $(DIST) --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$$mtime -cf - $$name | gzip -n > $(DIST)/$$name.tar.gz; \
	done
	cd $(DIST) && sha256sum *.tar.gz > checksums.txt && cat checksums.txt

release-smoke: ## make release for linux/amd64 only, then check the checksums and that each binary is static and prints VERSION (CI)
	$(MAKE) release RELEASE_PLATFORMS=linux/amd64
	cd $(DIST) && sha256sum -c checksums.txt
	set -e; dir=$(DIST)/orders-service_$(VERSION:v%=%)_linux_amd64; \
	for c in $(RELEASE_CMDS); do \
		go version -m $$dir/$$c | grep -q 'CGO_ENABLED=0' || { echo "$$c is not static" >&2; exit 1; }; \
		out=$$($$dir/$$c -version); echo "$$out"; \
		case "$$out" in "$$c $(VERSION) (revision $(REVISION)"*) ;; *) echo "$$c -version does not print $(VERSION) and $(REVISION)" >&2; exit 1;; esac; \
	done

check-asyncapi: ## validate api/asyncapi.yaml and its schemas with the official AsyncAPI parser (npm's @asyncapi/parser, pinned in scripts/asyncapi; needs Node.js)
	npm ci --prefix scripts/asyncapi --no-audit --no-fund --ignore-scripts --loglevel=error
	node scripts/asyncapi/validate.mjs api/asyncapi.yaml

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each (seed corpora are in testdata/fuzz)
	go test -run='^$$' -fuzz='^FuzzValidateNewOrder$$' -fuzztime=$(FUZZTIME) .
	go test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./pagetoken
	go test -run='^$$' -fuzz='^FuzzRecordDecoding$$' -fuzztime=$(FUZZTIME) ./inbox
	go test -run='^$$' -fuzz='^FuzzEncodeHeaders$$' -fuzztime=$(FUZZTIME) ./postgres
	go test -run='^$$' -fuzz='^FuzzHeaders$$' -fuzztime=$(FUZZTIME) ./cloudevents
