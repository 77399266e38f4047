//! The command line, parsed by hand: seven flags do not justify a CLI framework in a binary
//! that is uploaded to every worker.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Options;

pub const USAGE: &str = "\
Usage: ilha-apiproxy --listen ADDR:PORT --backend ADDR:PORT... --ca FILE [OPTIONS]

The node-local Kubernetes API proxy of ilha workers: plain TCP to the kube-apiservers
whose GET /readyz answers 200.

Options:
  --listen ADDR:PORT          where clients connect, normally 127.0.0.1:6443
  --backend ADDR:PORT         a kube-apiserver; repeat once per control-plane host
  --ca FILE                   the cluster CA the probes verify apiservers with (- = stdin)
  --connect-timeout DURATION  one connect to one backend for a client [default: 1s]
  --probe-interval DURATION   pause between two /readyz probes of a backend [default: 1s]
  --probe-timeout DURATION    limit on one /readyz probe [default: 2s]
  --fall N                    failed probes in a row that take a ready backend out [default: 2]
  --max-connections N         client connections at once; more are closed [default: 1024]
  -v, --verbose               one log line per client connection
  -h, --help                  this text
  -V, --version               the version

Durations take a unit: 500ms, 1s, 1.5s, 2m.
";

/// Everything the proxy needs from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub backends: Vec<SocketAddr>,
    pub ca: String,
    pub options: Options,
    pub verbose: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Config),
    /// `--help` or `--version`: print and exit 0.
    Print(String),
}

/// Parses the arguments after the program name; errors name the flag and the bad value.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut listen = None;
    let mut backends = Vec::new();
    let mut ca = None;
    let mut options = Options::default();
    let mut verbose = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--flag=value` and `--flag value` alike (the unit writes the first).
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Print(USAGE.to_string())),
            "-V" | "--version" => {
                return Ok(Parsed::Print(format!(
                    "ilha-apiproxy {}\n",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            "-v" | "--verbose" => verbose = true,
            "--listen" => listen = Some(address(&flag, &value()?)?),
            "--backend" => backends.push(address(&flag, &value()?)?),
            "--ca" => ca = Some(value()?),
            "--connect-timeout" => options.connect_timeout = duration(&flag, &value()?)?,
            "--probe-interval" => options.probe_interval = duration(&flag, &value()?)?,
            "--probe-timeout" => options.probe_timeout = duration(&flag, &value()?)?,
            "--fall" => options.fall = count(&flag, &value()?)?,
            "--max-connections" => options.max_connections = count(&flag, &value()?)?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let listen = listen.ok_or("--listen ADDR:PORT is required")?;
    if backends.is_empty() {
        return Err("at least one --backend ADDR:PORT is required".into());
    }
    let ca = ca.ok_or("--ca FILE is required (the cluster CA, to verify /readyz answers)")?;
    Ok(Parsed::Run(Config {
        listen,
        backends,
        ca,
        options,
        verbose,
    }))
}

fn address(flag: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{flag} `{text}` is not an IP address and port like 10.88.0.11:6443"))
}

fn count<T: std::str::FromStr + PartialEq + From<u8>>(flag: &str, text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(n),
        _ => Err(format!("{flag} `{text}` must be a whole number above zero")),
    }
}

/// Parses `500ms`, `1s`, `1.5s` or `2m`; zero is refused as it would make every attempt fail.
pub fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{flag} `{text}` has no unit: write e.g. 500ms, 1s or 2m"))?;
    let (number, unit) = text.split_at(unit_start);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{flag} `{text}` is not a duration like 500ms, 1s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "{flag} `{text}`: unknown unit `{unit}`, use ms, s or m"
            ));
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{flag} `{text}` must be more than zero")),
        Err(_) => Err(format!("{flag} `{text}` is out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_units_flags_parse() {
        let Parsed::Run(config) = run(&[
            "--listen=127.0.0.1:6443",
            "--backend=10.88.0.11:6443",
            "--backend",
            "10.88.0.12:6443",
            "--ca=-",
            "--probe-timeout=1500ms",
            "--max-connections=8",
        ])
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(config.listen, "127.0.0.1:6443".parse().unwrap());
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.ca, "-");
        assert_eq!(config.options.probe_timeout, Duration::from_millis(1500));
        assert_eq!(config.options.max_connections, 8);
        assert_eq!(config.options.probe_interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_input_names_the_flag_and_value() {
        let base = ["--listen=127.0.0.1:6443", "--ca=/ca.crt"];
        let cases: &[(&[&str], &str)] = &[
            (
                &["--backend=master1:6443"],
                "--backend `master1:6443` is not an IP address",
            ),
            (
                &["--backend=10.0.0.1:6443", "--probe-interval=1"],
                "has no unit",
            ),
            (
                &["--backend=10.0.0.1:6443", "--probe-timeout=0s"],
                "must be more than zero",
            ),
            (
                &["--backend=10.0.0.1:6443", "--fall=0"],
                "--fall `0` must be a whole number",
            ),
            (
                &["--backend=10.0.0.1:6443", "--frobnicate"],
                "unknown argument `--frobnicate`",
            ),
            (&["--backend=10.0.0.1:6443", "--ca"], "--ca needs a value"),
            (&[], "at least one --backend"),
        ];
        for (extra, expected) in cases {
            let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
            let err = run(&args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        assert!(
            run(&["--backend=10.0.0.1:6443", "--ca=x"])
                .unwrap_err()
                .contains("--listen")
        );
        assert!(
            run(&["--listen=127.0.0.1:1", "--backend=10.0.0.1:1"])
                .unwrap_err()
                .contains("--ca")
        );
    }

    #[test]
    fn help_and_version_print() {
        assert_eq!(run(&["--help"]), Ok(Parsed::Print(USAGE.to_string())));
        assert!(matches!(run(&["-V"]), Ok(Parsed::Print(v)) if v.starts_with("ilha-apiproxy ")));
    }
}
