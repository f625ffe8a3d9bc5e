# Headroom entry points. Keep these names: README, CI and later work rely on them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help test unit e2e lint crds cluster-up cluster-down demo

help:
	@echo "make test          every test: lint, unit, CRD drift, end-to-end on the local cluster"
	@echo "make demo          the local cluster with the operator and the examples, left running"
	@echo "make cluster-up    start the local control plane, Prometheus, PostgreSQL, example service"
	@echo "make cluster-down  stop all of it"
	@echo "make crds          regenerate crds/ from the Rust types"

test:
	./scripts/test.sh

unit:
	cargo test --workspace --exclude headroom-e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

crds:
	cargo run -q -p headroom -- crds --split crds/

cluster-up:
	./tests/cluster/up.sh

cluster-down:
	./tests/cluster/down.sh

demo:
	./scripts/demo.sh
