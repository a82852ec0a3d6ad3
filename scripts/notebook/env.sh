# Shared settings of scripts/setup.sh, scripts/lab.sh and scripts/test-notebooks.sh.
# Source it; it defines variables and functions and runs nothing.

# The repository root, from this file's location.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NOTEBOOK_DIR="$REPO_ROOT/notebooks"
HELPER_DIR="$REPO_ROOT/scripts/notebook"

# Everything set-up installs lives outside the repository, so it survives a fresh clone.
INFPHYS_CACHE="${INFPHYS_CACHE:-$HOME/.cache/infphys}"
# The build cache the test runner uses too, so the lab does not build everything a second time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$INFPHYS_CACHE/target}"
VENV="$INFPHYS_CACHE/venv"
PYTHON="$VENV/bin/python"
SETUP_STAMP="$INFPHYS_CACHE/setup.stamp"

# The kernel spec that setup.sh writes (named "rust", like evcxr's own) comes first in Jupyter's
# search path, so these scripts run evcxr through the launcher in scripts/notebook/evcxr-kernel.sh.
KERNEL_SPEC_DIR="$INFPHYS_CACHE/jupyter/kernels/rust"
KERNEL_SLOT_DIR="$INFPHYS_CACHE/evcxr-slots"
case ":${JUPYTER_PATH:-}:" in
    *":$INFPHYS_CACHE/jupyter:"*) ;;
    *) export JUPYTER_PATH="$INFPHYS_CACHE/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}" ;;
esac

# evcxr keeps the compiled registry crates of `:cache` sessions under $XDG_CACHE_HOME/evcxr.
# Exporting one value here makes set-up's warm build, the lab and the tests share that cache.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"

EVCXR_VERSION=0.22.0
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
EVCXR_JUPYTER="$CARGO_BIN/evcxr_jupyter"
# Where `evcxr_jupyter --install` writes evcxr's own kernel spec.
EVCXR_DATA_KERNEL="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter/kernels/rust"
export PATH="$CARGO_BIN:$PATH"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

log() {
    printf '[infphys] %s\n' "$*" >&2
}

die() {
    printf '[infphys] error: %s\n' "$*" >&2
    exit 1
}

# Prints the installed evcxr_jupyter version, or nothing when it is not installed by cargo.
installed_evcxr_version() {
    cargo install --list 2>/dev/null | sed -n 's/^evcxr_jupyter v\([^:]*\):$/\1/p'
}

# Prints a fingerprint of everything set-up depends on: when it changes, set-up must run again.
setup_fingerprint() {
    {
        cat "$HELPER_DIR/requirements.txt" "$HELPER_DIR/constraints.txt"
        cat "$REPO_ROOT/scripts/setup.sh" "$HELPER_DIR/warm_build.py" "$HELPER_DIR/evcxr-kernel.sh"
        # The dependencies that the warm build compiles.
        cat "$REPO_ROOT/crates/infphys/Cargo.toml" "$REPO_ROOT/crates/infphys-sim/Cargo.toml"
        echo "evcxr_jupyter $EVCXR_VERSION"
        rustc --version 2>/dev/null
        # The warm build runs each notebook's first code cell, so a change there needs a new one.
        "$PYTHON" "$HELPER_DIR/warm_build.py" --print-cells "$NOTEBOOK_DIR" 2>/dev/null
    } | sha256sum | cut -d' ' -f1
}
