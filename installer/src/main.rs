//! `ilha`: the air-gapped side. Everything lives in the library; see `ilha::cli` for the commands.

fn main() -> std::process::ExitCode {
    ilha::cli::main()
}
