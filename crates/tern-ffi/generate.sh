#!/usr/bin/env bash
# Generates the UniFFI bindings of tern-ffi into target/ffi/ (not committed):
#   target/ffi/python/tern_ffi.py    + a link to libtern_ffi.so (or .dylib) beside it
#   target/ffi/swift/                tern_ffi.swift, tern_ffiFFI.h, tern_ffiFFI.modulemap
#   target/ffi/kotlin/               uniffi/tern_ffi/tern_ffi.kt
# from the debug build of the library (--release: the release build), with
# the uniffi-bindgen binary of this crate (feature "bindgen").
#   generate.sh [--release] [LANGUAGE...]    (default: python swift kotlin)
# Swift and Kotlin sources are compiled only where swiftc / kotlinc exist
# (check with: generate.sh --compile swift kotlin).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
profile=debug
cargo_profile=()
compile=0
languages=()
for arg in "$@"; do
  case "$arg" in
    --release) profile=release; cargo_profile=(--release) ;;
    --compile) compile=1 ;;
    python|swift|kotlin) languages+=("$arg") ;;
    *) echo "usage: $0 [--release] [--compile] [python|swift|kotlin]..." >&2; exit 2 ;;
  esac
done
[[ ${#languages[@]} -gt 0 ]] || languages=(python swift kotlin)

cargo build --quiet "${cargo_profile[@]}" -p tern-ffi --lib
cargo build --quiet "${cargo_profile[@]}" -p tern-ffi --features bindgen --bin uniffi-bindgen
case "$(uname -s)" in
  Darwin) lib="$ROOT/target/$profile/libtern_ffi.dylib" ;;
  *) lib="$ROOT/target/$profile/libtern_ffi.so" ;;
esac
bindgen="$ROOT/target/$profile/uniffi-bindgen"
out="$ROOT/target/ffi"

for language in "${languages[@]}"; do
  rm -rf "${out:?}/$language"
  mkdir -p "$out/$language"
  "$bindgen" generate --library "$lib" --language "$language" --out-dir "$out/$language" >/dev/null
  echo "generate.sh: $language bindings in target/ffi/$language" >&2
done

if [[ " ${languages[*]} " == *" python "* ]]; then
  # The Python module loads the library from its own directory (a link:
  # the debug library is over 100 MiB).
  ln -sf "$lib" "$out/python/"
fi

[[ $compile -eq 1 ]] || exit 0
for language in "${languages[@]}"; do
  case "$language" in
    swift)
      if command -v swiftc >/dev/null; then
        (cd "$out/swift" && swiftc -emit-library -module-name tern_ffi -I "$out/swift" \
          -Xcc -fmodule-map-file="$out/swift/tern_ffiFFI.modulemap" \
          -L "$ROOT/target/$profile" -ltern_ffi tern_ffi.swift -o libtern_ffi_swift.so)
        echo "generate.sh: Swift bindings compiled" >&2
      else
        echo "generate.sh: swiftc not found; Swift bindings generated, not compiled" >&2
      fi
      ;;
    kotlin)
      if command -v kotlinc >/dev/null; then
        jna="${JNA_JAR:-}"
        if [[ -z "$jna" ]]; then
          echo "generate.sh: JNA_JAR (a jna.jar) not set; Kotlin bindings generated, not compiled" >&2
        else
          kotlinc -classpath "$jna" "$out/kotlin/uniffi/tern_ffi/tern_ffi.kt" -d "$out/kotlin/tern_ffi.jar"
          echo "generate.sh: Kotlin bindings compiled" >&2
        fi
      else
        echo "generate.sh: kotlinc not found; Kotlin bindings generated, not compiled" >&2
      fi
      ;;
  esac
done
