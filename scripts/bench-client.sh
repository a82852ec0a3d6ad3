#!/usr/bin/env bash
# Earlier name of scripts/bench-peers.sh, kept so existing commands still work.
# It accepts the same options, and those of this script's earlier version
# (--delay-ms, --levels, --python-max-requests, --no-warmup, --no-doc) mean the
# same there. See scripts/bench-peers.sh for what it measures.
exec "$(dirname "${BASH_SOURCE[0]}")/bench-peers.sh" "$@"
