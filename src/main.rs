//! The `tabtune` command line: train, evaluate, generate and benchmark with
//! the same core the browser uses.

mod cli;

use clap::Parser;

fn main() {
    cli::alloc::tune();
    cli::alloc::default_sigpipe();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
