//! Writes the V4L2 bindings for one target: `v4l2-bindings-generate <clang-target> <out.rs>
//! [clang args...]`. The options are those of the build script of v4l2-sys-mit 0.3.0
//! (`bindgen::Builder::default().header("wrapper.h")`), plus the target and the extra clang
//! arguments (the cross sysroot's include directory).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: v4l2-bindings-generate <clang-target> <out.rs> [clang args...]");
        std::process::exit(64);
    };
    let header = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wrapper.h");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("--target={target}"))
        .clang_args(args)
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("unable to generate the V4L2 bindings for {target}: {e}");
            std::process::exit(1);
        });
    bindings.write_to_file(&out).unwrap_or_else(|e| {
        eprintln!("unable to write {out}: {e}");
        std::process::exit(1);
    });
}
