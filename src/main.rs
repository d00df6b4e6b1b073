//! The `promptcam` binary: parses the command line, runs it, and prints any error chain once.

use clap::Parser;

fn main() {
    limit_malloc_arenas();
    promptcam::logging::init();
    let cli = promptcam::cli::Cli::parse();
    if let Err(e) = promptcam::cli::run(cli) {
        // a closed stdout (e.g. `| head`) is not an error worth reporting
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("promptcam: {e:#}");
        std::process::exit(2);
    }
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory
/// freed in an arena mostly stays with it: each camera's capture thread decoding full-size
/// frames then keeps tens of MB of its own. One arena keeps 4 cameras within +15% of one
/// camera's peak memory (BENCHMARKS.md: +12%, against +24% with glibc's default and +14-22%
/// with two) at no measured cost in speed (small blocks come from each thread's cache without
/// the arena's lock). An `MALLOC_ARENA_MAX` in the environment still wins. Runs before any
/// thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
