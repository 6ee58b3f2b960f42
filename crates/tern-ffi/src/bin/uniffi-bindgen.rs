//! The UniFFI bindings generator for `tern-ffi` (see `generate.sh`):
//! `uniffi-bindgen generate --library libtern_ffi.so --language python --out-dir DIR`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
