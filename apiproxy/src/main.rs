use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match ilha_apiproxy::args::parse(std::env::args().skip(1)) {
        Ok(ilha_apiproxy::args::Parsed::Run(config)) => config,
        Ok(ilha_apiproxy::args::Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}\n\n{}", ilha_apiproxy::args::USAGE);
            return ExitCode::from(2);
        }
    };
    ilha_apiproxy::log::set_verbose(config.verbose);
    match ilha_apiproxy::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}
