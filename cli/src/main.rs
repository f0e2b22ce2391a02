//! `fluxgate`: see the library docs for the subcommands and exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fluxgate_cli::Cli::parse();
    let code = fluxgate_cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
