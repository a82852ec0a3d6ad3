#!/usr/bin/env python3
"""Delete superseded test and example binaries from the cargo build cache.

Usage: prune-cache.py TARGET_DIR

Every change to a crate links a new copy of each test binary under TARGET_DIR/debug/deps (and
examples under debug/examples), named STEM-HASH, and cargo never removes the old ones: a busy
cache grew to about 60 GB. For each STEM this keeps the newest executable and deletes older ones
that have not been touched for an hour, so a build running right now keeps what it uses.
Prints the space freed.
"""

import collections
import os
import sys
import time

MIN_AGE_S = 3600


def prune(folder):
    groups = collections.defaultdict(list)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if "." in name or "-" not in name or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        groups[name.rsplit("-", 1)[0]].append((os.path.getmtime(path), path))

    freed = 0
    now = time.time()
    for versions in groups.values():
        versions.sort()
        for modified, path in versions[:-1]:
            if now - modified > MIN_AGE_S:
                freed += os.path.getsize(path)
                os.remove(path)
    return freed


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    freed = 0
    for sub in ("debug/deps", "debug/examples", "release/deps", "release/examples"):
        folder = os.path.join(sys.argv[1], sub)
        if os.path.isdir(folder):
            freed += prune(folder)
    print(f"build cache: freed {freed / 1e9:.1f} GB of superseded binaries")


if __name__ == "__main__":
    main()
