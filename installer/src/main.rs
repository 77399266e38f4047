//! `ilha`: the air-gapped side. Everything lives in the modules; see `cli` for the commands.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    cli::main()
}
