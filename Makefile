# Countersign: `make run` and `make test` work on a fresh Debian machine; everything they need is set up here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(PATH):/opt/swift/usr/bin

# Development token (hsm-config/init-token.sh). The PINs below are development defaults only.
HSM_DIR        ?= $(CURDIR)/.hsm
TOKEN_LABEL    ?= countersign
PKCS11_MODULE  ?= /usr/lib/softhsm/libsofthsm2.so
DEV_HSM_PIN    ?= countersign-dev
DEV_HSM_SO_PIN ?= countersign-so-dev
CONFIG         ?= hsm-config/countersign.yaml

SWIFT_BUILD_FLAGS ?=
APT_PACKAGES := softhsm2 opensc libp11-kit-dev libssl-dev libsqlite3-dev pkg-config openssl curl python3 python3-venv
# The approvals console's browser test (Selenium, Chrome's virtual authenticator): `make test` only.
TEST_APT_PACKAGES := chromium chromium-driver fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

HSM_ENV := SOFTHSM2_CONF=$(HSM_DIR)/softhsm2.conf \
	COUNTERSIGN_PKCS11_MODULE=$(PKCS11_MODULE) \
	COUNTERSIGN_TOKEN_LABEL=$(TOKEN_LABEL)

.PHONY: help setup packages python-packages python-client token build test run cluster release bench bench-cluster fuzz format lint clean

help:
	@echo "make run    set up, build, initialize and start countersignd with the example config"
	@echo "make test   set up, build, and run every test against a real SoftHSM2 token and a throw-away PostgreSQL"
	@echo "make cluster  a throw-away PostgreSQL and three servers on it (ports 7600-7602), until Ctrl-C"
	@echo "make setup  install missing system packages and create the development token"
	@echo "make python-client  the Python client (clients/python) and its test tools in a virtual environment, .build/python"
	@echo "make build  build the package (debug)"
	@echo "make bench  release build, a server on a fresh token (hsm-config/bench.yaml), the standard benchmark scenarios"
	@echo "make bench-cluster  on one throw-away PostgreSQL: one server (software, HSM, mix), then 2 and 3 servers (mix)"
	@echo "make fuzz   libFuzzer (with AddressSanitizer) on the JSON readers, the frame decoder and the handshake: FUZZ_RUNS executions each (default 1,000,000)"
	@echo "make format rewrite every Swift file as .swift-format says (swift-format, in the toolchain)"
	@echo "make lint   check every Swift file against .swift-format (make test runs it first)"
	@echo "make clean  remove build products and local state (.build, .hsm, .data, .build-bench, .build-fuzz)"

setup: packages python-packages token

# apt-get only when something is missing; `apt-get update` first, as a fresh machine has no lists.
packages:
	@missing=""; \
	for package in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test-packages:
	@$(MAKE) --no-print-directory packages APT_PACKAGES="$(TEST_APT_PACKAGES)"

# The interoperability test verifies authorizations with joserfc, a JOSE library nobody here wrote.
python-packages: packages
	@python3 -c "import joserfc" 2>/dev/null || { \
		python3 -m pip --version >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-pip >/dev/null; \
		python3 -m pip install --quiet joserfc 2>/dev/null || python3 -m pip install --quiet --break-system-packages joserfc; }

# The Python client as an agent developer installs it (`pip install ./clients/python`), with pytest, the official MCP
# client and joserfc for its tests, in a virtual environment of its own (Debian's Python refuses system-wide pip).
PYTHON_VENV ?= $(CURDIR)/.build/python
python-client: packages
	@[ -x $(PYTHON_VENV)/bin/python ] || python3 -m venv $(PYTHON_VENV)
	@$(PYTHON_VENV)/bin/pip install --quiet --disable-pip-version-check "./clients/python[test]"

token: packages
	@COUNTERSIGN_HSM_DIR=$(HSM_DIR) COUNTERSIGN_TOKEN_LABEL=$(TOKEN_LABEL) COUNTERSIGN_PKCS11_MODULE=$(PKCS11_MODULE) \
		COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN) COUNTERSIGN_HSM_SO_PIN=$(DEV_HSM_SO_PIN) \
		./hsm-config/init-token.sh

build: packages
	swift build $(SWIFT_BUILD_FLAGS)

# The tests make their own tokens in a temporary directory; `setup` proves the development path works too.
# A short fuzzing run comes first (the long one is `make fuzz`), so the test runner's summary is the last line.
# The tests run beside a throw-away PostgreSQL (hsm-config/postgres.sh: initdb in a temporary directory, a loopback
# port, stopped and removed after, however the tests end); COUNTERSIGN_REQUIRE_POSTGRES makes a test that finds
# no PostgreSQL fail instead of skipping. hsm-config/test-watchdog.sh ends a run that hangs after TEST_LIMIT seconds
# (the suite itself takes about two minutes here), naming the tests that never finished.
PG_DIR ?= /tmp/countersign-postgres-$(shell id -u)-$$$$
TEST_LIMIT ?= 1200
# Then the Python client's tests (pytest) against countersignd and `countersign mcp` as just built.
test: setup python-client test-packages lint
	$(MAKE) --no-print-directory fuzz FUZZ_RUNS=50000
	swift build --build-tests $(SWIFT_BUILD_FLAGS)
	swift build --product CountersignLatencyPKCS11 $(SWIFT_BUILD_FLAGS)
	COUNTERSIGN_REQUIRE_POSTGRES=1 ./hsm-config/postgres.sh run $(PG_DIR) -- ./hsm-config/test-watchdog.sh $(TEST_LIMIT) swift test --skip-build $(SWIFT_BUILD_FLAGS)
	COUNTERSIGN_BIN_DIR=$$(swift build $(SWIFT_BUILD_FLAGS) --show-bin-path) COUNTERSIGN_PKCS11_MODULE=$(PKCS11_MODULE) COUNTERSIGN_REQUIRE_BROWSER=1 \
		$(PYTHON_VENV)/bin/python -m pytest -q -p no:cacheprovider clients/python/tests

# The style of every Swift file (.swift-format: 4 spaces, 160 columns, imports ordered): `make format` rewrites,
# `make lint` (run first by `make test`, so CI) refuses a file that is not formatted, and a public symbol of the
# two published libraries (PKCS11, CountersignClient) without a documentation comment.
SWIFT_SOURCES := Sources Tests fuzz
PUBLISHED     := Sources/PKCS11 Sources/CountersignClient
format:
	swift format format --in-place --recursive --parallel $(SWIFT_SOURCES)

lint:
	swift format lint --strict --recursive --parallel $(SWIFT_SOURCES)
	@mkdir -p .build
	@sed 's/"AllPublicDeclarationsHaveDocumentation": false/"AllPublicDeclarationsHaveDocumentation": true/' .swift-format >.build/published.swift-format
	swift format lint --strict --recursive --configuration .build/published.swift-format $(PUBLISHED)

# libFuzzer (with AddressSanitizer), FUZZ_RUNS executions per target:
#  - json: the JSON readers every request body passes through; the fuzz target, Sources/CanonicalJSON and the
#    error vocabulary it uses (Sources/CountersignCore; neither has other dependencies) compiled together with swiftc;
#  - frames: the frame decoder, inputs split in chunks, every frame's body through the strict reader of its type;
#  - handshake: the server's handshake state machine on any sequence of frames.
# The last two are SwiftPM targets built with -sanitize=fuzzer,address -DFUZZING in a scratch directory of their own
# (the first build takes minutes: every dependency is instrumented). New inputs are kept in $(FUZZ_DIR)/corpus-*;
# the committed seeds are in fuzz/corpus/*.
FUZZ_DIR  ?= $(CURDIR)/.build-fuzz
FUZZ_RUNS ?= 1000000
FUZZ_SPM  := swift build -c release --scratch-path $(FUZZ_DIR)/spm -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING
fuzz: packages
	@mkdir -p $(FUZZ_DIR)/corpus-json $(FUZZ_DIR)/corpus-frames $(FUZZ_DIR)/corpus-handshake
	@swiftc -O -sanitize=fuzzer,address -parse-as-library Sources/CountersignCore/*.swift Sources/CanonicalJSON/*.swift fuzz/json/main.swift -o $(FUZZ_DIR)/json \
		2>$(FUZZ_DIR)/build.log || { cat $(FUZZ_DIR)/build.log; exit 1; }
	@echo "== fuzz json"; set -o pipefail; $(FUZZ_DIR)/json -runs=$(FUZZ_RUNS) -max_len=4096 -timeout=10 -print_final_stats=1 \
		$(FUZZ_DIR)/corpus-json fuzz/corpus/json 2>&1 | tail -12
	@for target in frames handshake; do \
		$(FUZZ_SPM) --product fuzz-$$target >$(FUZZ_DIR)/build-$$target.log 2>&1 || { tail -40 $(FUZZ_DIR)/build-$$target.log; exit 1; }; \
		echo "== fuzz $$target"; set -o pipefail; $(FUZZ_DIR)/spm/release/fuzz-$$target -runs=$(FUZZ_RUNS) -max_len=4096 -timeout=10 \
			-print_final_stats=1 $(FUZZ_DIR)/corpus-$$target fuzz/corpus/$$target 2>&1 | tail -12 || exit 1; \
	done

# Three servers on one throw-away PostgreSQL (hsm-config/cluster.sh), on ports 7600-7602, until Ctrl-C.
cluster: setup build
	$(HSM_ENV) COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN) ./hsm-config/cluster.sh

# Checks the token, creates the store, keys and first admin if needed, then serves until Ctrl-C.
run: setup build
	$(HSM_ENV) .build/debug/countersign hsm info
	$(HSM_ENV) COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN) .build/debug/countersignd init --config $(CONFIG)
	$(HSM_ENV) COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN) .build/debug/countersignd serve --config $(CONFIG)

# A release build, a fresh token and store in .build-bench, a server in the background, the scenarios of
# docs/benchmarks.md, and the server stopped again whatever happens; at the end one table of every scenario
# (hsm-config/bench-table.sh over .build-bench/results.txt).
BENCH_DIR   ?= $(CURDIR)/.build-bench
BENCH_FLAGS ?= --duration 10s --warmup 2s
BENCH_ENV   := SOFTHSM2_CONF=$(BENCH_DIR)/hsm/softhsm2.conf COUNTERSIGN_PKCS11_MODULE=$(PKCS11_MODULE) \
	COUNTERSIGN_TOKEN_LABEL=countersign-bench COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN)
# The "network HSM" scenarios: the token behind the latency-injecting module the package builds (docs/benchmarks.md);
# each sets COUNTERSIGN_LATENCY_MS, the delay per C_Sign.
NETWORK_HSM := COUNTERSIGN_PKCS11_MODULE=$(CURDIR)/.build/release/libCountersignLatencyPKCS11.so COUNTERSIGN_LATENCY_MODULE=$(PKCS11_MODULE)
BENCH_TARGET := COUNTERSIGN_SERVER=127.0.0.1:7700 COUNTERSIGN_CREDENTIAL=$(BENCH_DIR)/data/admin.credential \
	.build/release/countersign bench --http 127.0.0.1:7780
BENCH_CLI   := $(BENCH_ENV) $(BENCH_TARGET)

# The release binaries the benchmarks run, product by product: a bare `swift build` also builds the dependencies' examples.
release: setup
	swift build -c release --product countersignd $(SWIFT_BUILD_FLAGS)
	swift build -c release --product countersign $(SWIFT_BUILD_FLAGS)
	swift build -c release --product CountersignLatencyPKCS11 $(SWIFT_BUILD_FLAGS)

bench: release
	rm -rf $(BENCH_DIR) && mkdir -p $(BENCH_DIR)
	@COUNTERSIGN_HSM_DIR=$(BENCH_DIR)/hsm COUNTERSIGN_TOKEN_LABEL=countersign-bench COUNTERSIGN_PKCS11_MODULE=$(PKCS11_MODULE) \
		COUNTERSIGN_HSM_PIN=$(DEV_HSM_PIN) COUNTERSIGN_HSM_SO_PIN=$(DEV_HSM_SO_PIN) ./hsm-config/init-token.sh >/dev/null
	$(BENCH_ENV) .build/release/countersignd init --config hsm-config/bench.yaml --data-dir $(BENCH_DIR)/data >/dev/null
	@ulimit -n 8192; $(BENCH_ENV) .build/release/countersignd serve --config hsm-config/bench.yaml --data-dir $(BENCH_DIR)/data \
		--log-level warning 2>$(BENCH_DIR)/server.log & echo $$! > $(BENCH_DIR)/server.pid
	@for i in $$(seq 100); do curl -sf http://127.0.0.1:7780/healthz >/dev/null && break; sleep 0.1; done
	@ulimit -n 8192; status=0; set -o pipefail; out=$(BENCH_DIR)/results.txt; : > $$out; \
	echo "== 1,000 idle connections (first, on the fresh server)" | tee -a $$out; $(BENCH_CLI) --idle-connections 1000 | tee -a $$out || status=1; \
	echo "== software tier only" | tee -a $$out; $(BENCH_CLI) --baseline --mix micro=1 --at-half $(BENCH_FLAGS) | tee -a $$out || status=1; \
	echo "== HSM tier only" | tee -a $$out; $(BENCH_CLI) --baseline --mix high=1 --at-half $(BENCH_FLAGS) | tee -a $$out || status=1; \
	echo "== realistic mix" | tee -a $$out; $(BENCH_CLI) --mix micro=60,standard=30,high=10 $(BENCH_FLAGS) | tee -a $$out || status=1; \
	echo "== software tier, 32 agents, random keys" | tee -a $$out; $(BENCH_CLI) --mix micro=1 --agents 32 --connections 32 --depth 2 $(BENCH_FLAGS) | tee -a $$out || status=1; \
	echo "== software tier, 32 agents, time-ordered keys" | tee -a $$out; \
	$(BENCH_CLI) --mix micro=1 --agents 32 --connections 32 --depth 2 --keys time-ordered $(BENCH_FLAGS) | tee -a $$out || status=1; \
	pid=$$(cat $(BENCH_DIR)/server.pid); kill $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.1; done; \
	sed 's/max_sessions: 8/max_sessions: 16/' hsm-config/bench.yaml > $(BENCH_DIR)/network-hsm.yaml; \
	for ms in 4 16; do \
		if [ $$ms = 4 ]; then half=--at-half; title="network HSM: the same server and token behind a 4 ms C_Sign, 16 sessions (ceiling 4,000 signatures/s)"; \
		else half=; title="network HSM at 16 ms: 16 sessions, a ceiling of 1,000 signatures/s that leaves the CPU to spare"; fi; \
		echo "== $$title" | tee -a $$out; \
		$(BENCH_ENV) $(NETWORK_HSM) COUNTERSIGN_LATENCY_MS=$$ms .build/release/countersignd serve --config $(BENCH_DIR)/network-hsm.yaml \
			--data-dir $(BENCH_DIR)/data --log-level warning 2>>$(BENCH_DIR)/server.log & echo $$! > $(BENCH_DIR)/server.pid; \
		for i in $$(seq 100); do curl -sf http://127.0.0.1:7780/healthz >/dev/null && break; sleep 0.1; done; \
		$(BENCH_ENV) $(NETWORK_HSM) COUNTERSIGN_LATENCY_MS=$$ms $(BENCH_TARGET) --baseline --threads 16 --connections 16 --depth 8 --mix high=1 $$half \
			$(BENCH_FLAGS) | tee -a $$out || status=1; \
		pid=$$(cat $(BENCH_DIR)/server.pid); kill $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.1; done; \
	done; \
	BENCH_FLAGS="$(BENCH_FLAGS)" ./hsm-config/bench-cluster.sh | tee -a $$out || status=1; \
	echo; ./hsm-config/bench-table.sh < $$out; exit $$status

# On one throw-away PostgreSQL (hsm-config/bench-cluster.sh): one server's software tier, HSM tier and realistic mix, then
# the realistic mix against 2 and 3 servers at once. `make bench` ends with the same runs.
bench-cluster: release
	./hsm-config/bench-cluster.sh

clean:
	rm -rf .build .hsm .data .build-bench .build-bench-cluster .build-fuzz
