# Mirror: local build / CI entry points. `make test` is what CI runs (.ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

VENV := .venv
PY   := $(VENV)/bin/python
SAM  := $(VENV)/bin/sam
RUFF := $(VENV)/bin/ruff

# SAM's PythonPipBuilder needs an interpreter named `python3.12` on PATH; the venv has one.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0

.PHONY: venv test lint typecheck build demo bench eval clean

# The team's labelled cases live beside the checkout; pass EVAL_DIR=... to use others.
EVAL_DIR ?= ../shared/eval/dev

venv:
	@bash scripts/bootstrap.sh

lint: venv
	$(RUFF) check .
	$(RUFF) format --check .
	$(PY) -m mypy
	$(SAM) validate --lint

# Strict mypy with the pydantic plugin on the core and the bridge ([tool.mypy] in pyproject.toml).
typecheck: venv
	$(PY) -m mypy

# Ship hash-based .pyc files: /var/task is read-only, so otherwise every cold start compiles.
build: venv
	$(SAM) build
	$(PY) -m compileall -q -j0 --invalidation-mode unchecked-hash .aws-sam/build

# Dummy credentials, no profile or session token: nothing in `make test` can reach a real
# AWS account (an AWS_PROFILE from the caller would even break `sam validate`).
SANDBOX := env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN \
	AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1

# pytest exit 5 (no tests collected) fails the target like any other non-zero exit.
test: venv
	$(RUFF) check .
	$(RUFF) format --check .
	$(PY) -m mypy
	$(SANDBOX) $(SAM) validate --lint
	$(SANDBOX) $(SAM) build
	$(PY) -m compileall -q -j0 --invalidation-mode unchecked-hash .aws-sam/build
	@rc=0; $(SANDBOX) $(PY) -m pytest || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# One call through the whole local stack (moto server, the bridge on uvicorn, the functions
# in-process, a scripted Plivo and agent), offline; non-zero if it did not go as scripted.
demo: venv
	$(SANDBOX) $(PY) scripts/demo_call.py

bench: venv
	$(PY) benchmarks/judge.py --eval-dir $(EVAL_DIR) --json
	$(PY) benchmarks/cold_start.py --json

# The bridge under load on loopback (benchmarks/bridge.py --help): one JSON line, exit 0 either way.
.PHONY: bench-bridge
bench-bridge: venv
	$(SANDBOX) $(PY) benchmarks/bridge.py --json

# The long hostile-input, fault-injection and bridge-fuzz campaign (scripts/campaign.py --help):
# the `campaign` hypothesis profile and many more fuzzed calls than `make test`'s bounded run;
# one JSON summary line (cases, crashes, 5xx, lost events per target); non-zero if a case broke.
.PHONY: campaign
campaign: venv
	$(SANDBOX) $(PY) scripts/campaign.py

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

eval: venv
	$(VENV)/bin/mirror eval $(EVAL_DIR)/*.jsonl
