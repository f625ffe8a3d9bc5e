# Headroom entry points. Keep these names: README, CI and later work rely on them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

bench:
	./scripts/bench.sh

install:
	cargo build --release --locked -p headroom
	install -D -m 0755 target/release/headroom $(HOME)/.local/bin/headroom
	ln -sf headroom $(HOME)/.local/bin/kubectl-headroom

.PHONY: install bench help test unit e2e lint crds cluster-up cluster-down demo deploy-check image

help:
	@echo "make test          every test: lint, unit, CRD drift, end-to-end on the local cluster"
	@echo "make demo          the local cluster with the operator and the examples, left running"
	@echo "make cluster-up    start the local control plane, Prometheus, PostgreSQL, example service"
	@echo "make cluster-down  stop all of it"
	@echo "make bench         performance figures: SLO evaluation at scale, rule cost beside Sloth, abort reaction"
	@echo "make crds          regenerate crds/ from the Rust types"
	@echo "make deploy-check  deploy/ and examples/ against the local cluster: dry run and RBAC checks"
	@echo "make image         build the container image (needs a Docker engine; not run in CI here)"

test:
	./scripts/test.sh

unit:
	cargo test --workspace --exclude headroom-e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

crds:
	cargo run -q -p headroom -- crds --split crds/
	cargo run -q -p headroom -- crds --split deploy/helm/headroom/crds/

cluster-up:
	./tests/cluster/up.sh

cluster-down:
	./tests/cluster/down.sh

demo:
	./scripts/demo.sh

deploy-check:
	./scripts/deploy-check.sh

# Tag it for your registry and set deploy/kustomization.yaml's images: to match.
image:
	docker build -t headroom:0.1.0 .
