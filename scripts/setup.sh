#!/usr/bin/env bash
# Set up everything the notebooks need; safe to run again, and it redoes only what is missing.
#
#   1. A Python venv with JupyterLab, nbclient, nbconvert and plotly, pinned, at
#      ${INFPHYS_CACHE:-~/.cache/infphys}/venv.
#   2. evcxr_jupyter $EVCXR_VERSION (the Rust kernel), built by cargo only when it is missing
#      or another version: 10 to 40 minutes on 2 cores.
#   3. The kernel registered with Jupyter as "rust", twice: evcxr's own spec, and one under
#      $INFPHYS_CACHE/jupyter that the lab and the tests use (see scripts/notebook/env.sh).
#   4. mold, the linker evcxr prefers, and Chromium for the tests, installed with apt-get when
#      missing and when running as root.
#   5. A warm build: each notebook's first cell runs once in a fresh kernel, so that evcxr
#      compiles polars, plotly and the rest once and caches them under $XDG_CACHE_HOME/evcxr.
#      Without it a learner's first cell compiles for 6 to 14 minutes (measured on 2 cores).
#
# Usage: scripts/setup.sh [--skip-chromium]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/notebook/env.sh"

install_chromium=1
for arg in "$@"; do
    case "$arg" in
        --skip-chromium) install_chromium=0 ;;
        -h | --help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown option $arg; expected --skip-chromium or --help" ;;
    esac
done

started=$SECONDS
mkdir -p "$INFPHYS_CACHE"

# 1. Python venv.
command -v python3 >/dev/null || die "python3 not found; install Python 3.10 or later"
if [[ ! -x "$PYTHON" ]]; then
    log "creating the Python venv at $VENV"
    python3 -m venv "$VENV"
fi
requirements_hash=$(cat "$HELPER_DIR/requirements.txt" "$HELPER_DIR/constraints.txt" | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$requirements_hash" ]]; then
    log "installing JupyterLab, nbclient, nbconvert and plotly into $VENV"
    "$PYTHON" -m pip install --quiet \
        -r "$HELPER_DIR/requirements.txt" -c "$HELPER_DIR/constraints.txt"
    echo "$requirements_hash" >"$VENV/.requirements.sha256"
fi
log "Python venv: $VENV"

# 2. The Rust kernel.
command -v cargo >/dev/null || die "cargo not found; install Rust with rustup first"
installed=$(installed_evcxr_version)
if [[ "$installed" != "$EVCXR_VERSION" || ! -x "$EVCXR_JUPYTER" ]]; then
    log "building evcxr_jupyter $EVCXR_VERSION (installed: ${installed:-none})."
    log "This takes 10 to 40 minutes on 2 cores, and happens once."
    cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked
fi
log "evcxr_jupyter $EVCXR_VERSION: $EVCXR_JUPYTER"

# evcxr's type inference reads the standard library's source.
if command -v rustup >/dev/null && ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding the rust-src component, which evcxr needs"
    rustup component add rust-src || log "could not add rust-src; evcxr will warn in every session"
fi

# 3. Register the kernel: evcxr's own spec, for any Jupyter, and the spec that these scripts
# use, which runs evcxr through a launcher that keeps each kernel's build folder between
# sessions (see scripts/notebook/evcxr-kernel.sh).
if [[ ! -f "$EVCXR_DATA_KERNEL/kernel.json" ]] || ! grep -q "\"$EVCXR_JUPYTER\"" "$EVCXR_DATA_KERNEL/kernel.json"; then
    log "registering evcxr's Rust kernel with Jupyter"
    # evcxr_jupyter installs into JUPYTER_PATH when it is set.
    env -u JUPYTER_PATH "$EVCXR_JUPYTER" --install >/dev/null
fi
mkdir -p "$KERNEL_SPEC_DIR"
cp "$HELPER_DIR/evcxr-kernel.sh" "$KERNEL_SPEC_DIR/evcxr-kernel.sh"
cp "$EVCXR_DATA_KERNEL"/logo-*.png "$EVCXR_DATA_KERNEL"/kernel.js "$EVCXR_DATA_KERNEL"/lint* "$KERNEL_SPEC_DIR/" 2>/dev/null || true
"$PYTHON" - "$KERNEL_SPEC_DIR" "$EVCXR_JUPYTER" "$KERNEL_SLOT_DIR" <<'PY'
import json, pathlib, sys
spec_dir, evcxr_jupyter, slot_dir = sys.argv[1:]
spec = {
    "argv": ["/bin/bash", f"{spec_dir}/evcxr-kernel.sh", evcxr_jupyter, slot_dir,
             "--control_file", "{connection_file}"],
    "display_name": "Rust",
    "interrupt_mode": "message",
    "language": "rust",
}
pathlib.Path(spec_dir, "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
PY
log "Jupyter kernel: rust, from $KERNEL_SPEC_DIR"

# 4. System packages, with apt-get when running as root: mold, the linker evcxr picks when it
# is installed (each cell links all of polars into one library, which GNU ld does slowly), and
# chromium, which only scripts/test-notebooks.sh uses.
packages=()
command -v mold >/dev/null || packages+=(mold)
[[ $install_chromium == 1 && ! -x "$CHROMIUM" ]] && packages+=(chromium)
if ((${#packages[@]})); then
    if [[ $(id -u) == 0 ]]; then
        log "installing ${packages[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        log "missing ${packages[*]}; install with: sudo apt-get install ${packages[*]}"
    fi
fi

# 5. Warm build.
fingerprint=$(setup_fingerprint)
if [[ "$(cat "$SETUP_STAMP" 2>/dev/null)" == "$fingerprint" && -n "$(ls -A "$XDG_CACHE_HOME/evcxr" 2>/dev/null)" ]]; then
    log "warm build: already done for these notebooks and this rustc"
else
    log "warm build: compiling the notebooks' dependencies into evcxr's cache ($XDG_CACHE_HOME/evcxr)."
    log "The first time this takes 6 to 14 minutes on 2 cores; later runs take about half a minute."
    warm_started=$SECONDS
    "$PYTHON" "$HELPER_DIR/warm_build.py" "$NOTEBOOK_DIR"
    log "warm build: done in $((SECONDS - warm_started)) s"
    echo "$fingerprint" >"$SETUP_STAMP"
fi

log "set-up finished in $((SECONDS - started)) s; start the lab with scripts/lab.sh"
