#!/usr/bin/env bash
# Jupyter kernel launcher: runs evcxr_jupyter with a build folder that outlives the kernel.
#
# evcxr builds each session's code in a new temporary folder, and its `:cache` keeps only
# registry crates. So every fresh kernel compiles the notebook's path dependencies (infphys and
# its simulator) again, which took about 20 s on 2 cores. With EVCXR_TMPDIR set to a folder kept
# between sessions, cargo finds those builds up to date. Two kernels must never share the folder,
# because each writes its cell's source into it before building. So every folder is a slot with a
# lock that its kernel keeps until it exits, and when every slot is taken, evcxr falls back to a
# temporary folder as usual.
#
# scripts/setup.sh copies this file into the kernel spec it writes under
# $INFPHYS_CACHE/jupyter/kernels/rust; it is not run from the repository.
#
# Usage: evcxr-kernel.sh EVCXR_JUPYTER SLOT_DIR [evcxr_jupyter arguments...]
set -euo pipefail

evcxr_jupyter=$1
slot_dir=$2
shift 2

# More kernels at once than this is rare on a 2-core machine, and each slot takes about 1 GB.
SLOTS=4

# evcxr_jupyter takes JUPYTER_PATH as the folder of its own kernel spec and rewrites the spec
# there when it finds no version.txt. Without the variable it checks its own spec instead.
unset JUPYTER_PATH

# rustc gives each cell's library a RUNPATH to the Rust standard library that is relative to the
# folder it was linked in, and evcxr then moves the library one folder up. The path still lands
# on the standard library from a folder such as /tmp, where the extra ".." stops at /, but not
# from a folder that shares a parent with the toolchain, such as ~/.cache beside ~/.rustup. The
# dynamic loader searches LD_LIBRARY_PATH first.
if libdir=$(rustc --print target-libdir 2>/dev/null); then
    export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

mkdir -p "$slot_dir"
for slot in $(seq 0 $((SLOTS - 1))); do
    exec {lock_fd}>"$slot_dir/$slot.lock"
    if flock --nonblock "$lock_fd"; then
        # The lock stays with the open descriptor, which evcxr_jupyter inherits through exec.
        export EVCXR_TMPDIR="$slot_dir/$slot"
        mkdir -p "$EVCXR_TMPDIR"
        exec "$evcxr_jupyter" "$@"
    fi
    exec {lock_fd}>&-
done
exec "$evcxr_jupyter" "$@"
