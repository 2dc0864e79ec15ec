#!/usr/bin/env bash
# Create or update .venv (Python 3.12) with requirements-dev.txt, `-e .` (the core library
# `mirror`) and `-e dev` (the development package `mirror_dev`, never shipped).
# Fast no-op when .venv/.installed matches the hash of the dependency files.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.installed"
INPUTS=(requirements-dev.txt layers/deps/requirements.txt pyproject.toml dev/pyproject.toml)

say() { printf 'bootstrap: %s\n' "$*" >&2; }

is_py312() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1
}

inputs_hash() {
    if command -v sha256sum >/dev/null 2>&1; then
        cat "${INPUTS[@]}" | sha256sum | cut -d' ' -f1
    else
        cat "${INPUTS[@]}" | shasum -a 256 | cut -d' ' -f1
    fi
}

# Prints the path of a working Python 3.12, or returns 1.
find_python312() {
    local p v
    # 1. python3.12 on PATH that really runs (a pyenv shim exists even when 3.12 isn't selected).
    if p=$(command -v python3.12) && is_py312 "$p"; then
        echo "$p"
        return 0
    fi
    # 2. pyenv: newest installed 3.12.x.
    if command -v pyenv >/dev/null 2>&1; then
        for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' \
                   | sort -t. -k3,3nr); do
            if p=$(PYENV_VERSION="$v" pyenv which python3.12 2>/dev/null) && is_py312 "$p"; then
                echo "$p"
                return 0
            fi
        done
    fi
    # 3. uv-managed interpreter.
    if command -v uv >/dev/null 2>&1; then
        if p=$(uv python find 3.12 2>/dev/null) && is_py312 "$p"; then
            echo "$p"
            return 0
        fi
    fi
    return 1
}

want=$(inputs_hash)

# Keep an existing venv only if it is a working 3.12 one.
if [[ -e "$VENV" ]]; then
    if [[ ! -f "$VENV/pyvenv.cfg" ]]; then
        say "$VENV exists but is not a virtualenv (no pyvenv.cfg); move it away and re-run."
        exit 1
    fi
    if ! is_py312 "$VENV/bin/python"; then
        say "$VENV is not a working Python 3.12 venv; recreating it."
        rm -rf "$VENV"
    elif [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        say "$VENV is up to date."
        exit 0
    fi
fi

if [[ ! -d "$VENV" ]]; then
    if ! py=$(find_python312); then
        cat >&2 <<'EOF'
bootstrap: Python 3.12 not found (tried python3.12 on PATH, pyenv, uv).
Install one, then re-run `make venv`:
  pyenv:   pyenv install 3.12        (no need to select it; this script finds it)
  uv:      uv python install 3.12
  macOS/Windows: installer from https://www.python.org/downloads/
  Debian/Ubuntu: sudo apt-get install python3.12 python3.12-venv
                 (on older releases via the deadsnakes PPA)
EOF
        exit 1
    fi
    say "creating $VENV with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    "$py" -m venv "$VENV"
fi

rm -f "$STAMP"
say "installing requirements-dev.txt, -e . and -e dev"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements-dev.txt -e . -e dev
echo "$want" >"$STAMP"
say "done."
