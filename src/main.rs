//! The `promptcam` binary: parses the command line, runs it, and prints any error chain once.

use clap::Parser;

fn main() {
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
