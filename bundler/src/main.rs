use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ilha_bundler::cli::Cli::parse();
    match ilha_bundler::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
