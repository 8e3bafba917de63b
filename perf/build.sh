# Sourced by the perf scripts: the binary under test and what the record calls it.
# BIN unset: this tree, built in release, named by its commit; BIN set: another
# build, named by its file.
if [ -z "${BIN:-}" ]; then
    cargo build --release -q
    BIN=target/release/alphapt-storage
    BUILD=$(git rev-parse --short HEAD)
else
    BUILD="bin:$(basename "$BIN")"
fi
