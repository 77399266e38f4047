# ilha — two commands on a fresh Debian 12 machine (as root):
#   make demo   bundle -> lab of 6 real hosts -> HA cluster (ilha up) -> backup (restore kit) -> restore
#   make test   the whole suite, lab included
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

# Debian packages the build, the tests and the lab need. `deps` installs only what is missing.
DEBIAN_PACKAGES := \
	build-essential make gcc libc6-dev patch binutils xz-utils ca-certificates jq rsync zstd \
	openssl procps python3 \
	systemd-container debootstrap iproute2 iptables openssh-client \
	docker-registry skopeo minisign age \
	dpkg-dev golang-go golang-github-modern-go-reflect2-dev

BUNDLE := bundles/lab.tar.zst
KEYDIR := bundles/keys
# The age identity `make demo` encrypts its restore kits to (restore needs it; kept away from the kits).
KIT_IDENTITY := $(KEYDIR)/kit-identity.txt
# How ilha reaches the lab's hosts (written by `cargo xtask lab up`, default state directory).
LAB_SSH := --ssh-config /var/lib/ilha-lab/ssh/ssh_config --known-hosts /var/lib/ilha-lab/ssh/known_hosts

.PHONY: all deps build test demo lab-up lab-down lab-status lint bench bench-up bench-scale bench-backup clean-lab

all: build

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found (install Rust)"; exit 1; }

build:
	$(CARGO) build --workspace --all-targets

# The whole suite. Lab tests take the lab's lock, so the test runner's parallelism is safe.
test: deps
	$(CARGO) build --workspace --all-targets
	$(CARGO) xtask artifacts build
	@mkdir -p target
	@# CI shows only the head and tail of a long log: the reasons are repeated at the end.
	@{ $(CARGO) test --workspace --no-fail-fast && status=0 || status=$$?; echo $$status > target/test-status; } 2>&1 | tee target/test.log
	@status=$$(cat target/test-status); if [ "$$status" != 0 ]; then \
	    echo "=== why each failing test failed (whole log: target/test.log) ==="; \
	    grep -A12 -E "^thread '.*panicked at" target/test.log \
	        | grep -vE '^ +([0-9]+: |at )|^stack backtrace:|^note: '; \
	fi; exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: deps
	$(CARGO) build --release -p ilha-bundler -p ilha
	$(CARGO) xtask artifacts build
	$(CARGO) xtask artifacts serve
	@test -f $(KEYDIR)/ilha.key || target/release/ilha-bundler keygen --out $(KEYDIR)
	target/release/ilha-bundler build manifests/lab.yaml --key $(KEYDIR)/ilha.key \
	    --insecure-registry 127.0.0.1:5880 --out $(BUNDLE)
	target/release/ilha verify $(BUNDLE) --pubkey $(KEYDIR)/ilha.pub
	target/release/ilha inspect $(BUNDLE)
	$(CARGO) xtask lab up -n 6
	target/release/ilha up $(BUNDLE) --pubkey $(KEYDIR)/ilha.pub \
	    -i examples/lab/inventory.ini -c examples/lab/cluster.yaml $(LAB_SSH)
	target/release/ilha up $(BUNDLE) --pubkey $(KEYDIR)/ilha.pub \
	    -i examples/lab/inventory.ini -c examples/lab/cluster.yaml $(LAB_SSH)
	$(CARGO) xtask lab ssh 1 'kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o wide'
	@# A restore kit (signed, drilled, encrypted to an age key kept apart from the kits), checked
	@# with stock minisign, then etcd restored from it.
	@test -f $(KIT_IDENTITY) || { mkdir -p $(dir $(KIT_IDENTITY)); age-keygen -o $(KIT_IDENTITY) 2>/dev/null; }
	kit=bundles/backups/lab-$$(date -u +%Y%m%dT%H%M%SZ).tar.zst; \
	target/release/ilha backup -i examples/lab/inventory.ini -c examples/lab/cluster.yaml $(LAB_SSH) --out $$kit \
	    --encrypt-to "$$(age-keygen -y $(KIT_IDENTITY))" && \
	minisign -Vm $$kit -p bundles/lab-state/kit-key/ilha.pub && \
	target/release/ilha inspect $$kit && \
	target/release/ilha restore $$kit --identity $(KIT_IDENTITY) --yes \
	    -i examples/lab/inventory.ini -c examples/lab/cluster.yaml $(LAB_SSH)
	$(CARGO) xtask lab ssh 1 'kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes'

bench: deps
	$(CARGO) bench -p ilha-format --bench verify
	$(CARGO) bench -p ilha-bundler --bench build

# Wall time of `ilha up` for 3, 6 and 12 lab hosts (wipes the lab).
bench-up: deps
	$(CARGO) xtask artifacts build
	bench/up.sh 3 6 12

# Wall time of `ilha backup` of a 6-host cluster with ~10k objects, and of the etcd recovery (wipes the lab).
bench-backup: deps
	$(CARGO) xtask artifacts build
	bench/backup.sh

# Wall time of `ilha scale` adding one worker to a running 6-host cluster (wipes the lab).
bench-scale: deps
	$(CARGO) xtask artifacts build
	bench/scale.sh

lab-up: deps
	$(CARGO) xtask lab up -n 6
lab-down:
	$(CARGO) xtask lab down
lab-status:
	$(CARGO) xtask lab status
clean-lab:
	$(CARGO) xtask lab wipe
	$(CARGO) xtask artifacts stop
