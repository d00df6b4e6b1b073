//! The `promptcam` binary: parses the command line, runs it, and prints any error chain once.

use clap::Parser;

fn main() {
    promptcam::logging::init();
    let cli = promptcam::cli::Cli::parse();
    if let Err(e) = promptcam::cli::run(cli) {
        eprintln!("promptcam: {e:#}");
        std::process::exit(2);
    }
}
