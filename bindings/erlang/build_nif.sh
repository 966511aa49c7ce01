#!/bin/sh
# rebar3's pre-compile hook: puts the NIF (crates/tunctl-erl) in priv/libtunctl_erl.so.
# By default it builds it: `cargo build --release -p tunctl-erl` in the workspace above.
# TUNCTL_ERL_NIF=/path/to/libtunctl_erl.so copies that one instead (the Rust test that runs
# the Erlang suites uses the library cargo built for it: a cargo run inside `cargo test`
# would wait for the build directory that `cargo test` holds).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/priv"
if [ -n "${TUNCTL_ERL_NIF:-}" ]; then
  src=$TUNCTL_ERL_NIF
else
  workspace=$(cd "$here/../.." && pwd)
  cargo build --release --quiet -p tunctl-erl --manifest-path "$workspace/Cargo.toml"
  target=${CARGO_TARGET_DIR:-$workspace/target}
  case $target in /*) ;; *) target=$workspace/$target ;; esac
  src=$target/release/libtunctl_erl.so
fi
# Replaced, not overwritten: a running VM may have the old one mapped. The temporary name is
# this hook's own, as several builds may run at once (the tests do).
cp "$src" "$here/priv/libtunctl_erl.so.$$"
mv -f "$here/priv/libtunctl_erl.so.$$" "$here/priv/libtunctl_erl.so"
