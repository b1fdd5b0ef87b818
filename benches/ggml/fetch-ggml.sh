#!/usr/bin/env bash
# Copies ggml's sources (ggml 0.26.0, as bundled in the llama-cpp-sys-2
# 0.1.161 crate) into vendor/ggml, for build.rs. Downloads the crate with
# `cargo fetch` from a throwaway package; builds nothing of it.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=0.1.161
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cat > "$tmp/Cargo.toml" <<TOML
[package]
name = "fetch-ggml"
version = "0.0.0"
edition = "2021"
[dependencies]
llama-cpp-sys-2 = "=$VERSION"
[workspace]
TOML
touch "$tmp/src/lib.rs"
(cd "$tmp" && cargo fetch -q)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-$VERSION/llama.cpp/ggml | head -1)
rm -rf vendor/ggml
mkdir -p vendor
cp -r "$src" vendor/ggml
echo "ggml sources from llama-cpp-sys-2 $VERSION in $(pwd)/vendor/ggml"
