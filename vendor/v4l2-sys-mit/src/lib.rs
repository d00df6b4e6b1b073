#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]
// (upstream also allows `unaligned_references`, a lint today's rustc has removed and warns about)

// The upstream crate includes $OUT_DIR/v4l2_bindings.rs, written by bindgen at build time; these
// are the same bindgen's output for each architecture, generated once by regenerate.sh.
#[cfg(target_arch = "x86_64")]
include!("bindings/x86_64.rs");
#[cfg(target_arch = "aarch64")]
include!("bindings/aarch64.rs");
#[cfg(target_arch = "arm")]
include!("bindings/arm.rs");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
compile_error!(
    "no pre-generated V4L2 bindings for this architecture: add it to vendor/v4l2-sys-mit/regenerate.sh and run it"
);
