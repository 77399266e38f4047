//! `ansible_ssh_common_args` / `ansible_ssh_extra_args`: split with shell quoting rules (as
//! Ansible does) and kept only where they cannot undo what ilha relies on: its own control
//! connection (`-M`, `-S`, `ControlPath`...), strict host key checking, batch mode, and one
//! source for user and port (`ansible_user`, `ansible_port`).

/// What the arguments ask of ssh, in the form ilha hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SshArgs {
    /// `-J` / `-o ProxyJump=`: bastions, in order.
    pub jump_hosts: Vec<String>,
    /// `-o Key=Value` (and the flags with an option equivalent), as ssh_config lines `Key=Value`.
    pub options: Vec<String>,
}

/// Options that would break ilha's control connection, weaken host key checking, hide failures
/// or fight the inventory's own variables; each with the reason given to the operator.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    (
        "stricthostkeychecking",
        "ilha checks host keys itself (`--accept-new-host-keys` learns new ones)",
    ),
    (
        "userknownhostsfile",
        "host keys are checked against the operator's known_hosts (`--known-hosts` picks another file)",
    ),
    (
        "globalknownhostsfile",
        "host keys are checked against the operator's known_hosts",
    ),
    (
        "knownhostscommand",
        "host keys are checked against the operator's known_hosts",
    ),
    ("controlmaster", "ilha runs its own control connection"),
    ("controlpath", "ilha runs its own control connection"),
    ("controlpersist", "ilha runs its own control connection"),
    ("batchmode", "ilha never prompts: batch mode stays on"),
    ("requesttty", "ilha's commands run without a terminal"),
    ("remotecommand", "ilha chooses the commands it runs"),
    (
        "sessiontype",
        "ilha's control connection needs its session type",
    ),
    ("stdinnull", "ilha's control connection needs its stdin"),
    (
        "forkafterauthentication",
        "ilha's control connection is started by ilha",
    ),
    ("user", "set the user with `ansible_user`"),
    ("port", "set the port with `ansible_port`"),
    ("hostname", "set the address with `ansible_host`"),
    ("connecttimeout", "ilha sets the connect timeout itself"),
];

/// Flags with an ssh_config equivalent, accepted as that option.
const FLAG_OPTIONS: &[(&str, &str)] = &[
    ("-4", "AddressFamily=inet"),
    ("-6", "AddressFamily=inet6"),
    ("-A", "ForwardAgent=yes"),
    ("-C", "Compression=yes"),
    ("-q", "LogLevel=QUIET"),
];

/// Splits and checks one variable's value, adding to `args`. `Err((argument, why))` names the
/// first argument refused.
pub fn parse_into(value: &str, args: &mut SshArgs) -> Result<(), (String, String)> {
    let words = shlex::split(value).ok_or_else(|| {
        (
            value.to_string(),
            "unbalanced quotes (the value is split like a shell command line)".to_string(),
        )
    })?;
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let mut value_of = |flag: &str| -> Result<String, (String, String)> {
            match word.strip_prefix(flag) {
                Some(rest) if !rest.is_empty() => Ok(rest.to_string()),
                _ => words
                    .next()
                    .ok_or_else(|| (word.clone(), format!("`{flag}` needs a value"))),
            }
        };
        if word.starts_with("-o") {
            let option = value_of("-o")?;
            add_option(&option, args)?;
        } else if word.starts_with("-J") {
            let hosts = value_of("-J")?;
            add_jump_hosts(&hosts, args);
        } else if word.starts_with("-i") {
            let file = value_of("-i")?;
            add_option(&format!("IdentityFile={file}"), args)?;
        } else if let Some((_, option)) = FLAG_OPTIONS.iter().find(|(flag, _)| *flag == word) {
            args.options.push(option.to_string());
        } else if word == "-p" || word.starts_with("-p") {
            return Err((word, "set the port with `ansible_port`".to_string()));
        } else if word == "-l" || word.starts_with("-l") {
            return Err((word, "set the user with `ansible_user`".to_string()));
        } else {
            return Err((
                word,
                "ilha passes on only `-o Key=Value`, `-J`, `-i`, `-4`, `-6`, `-A`, `-C` and `-q` (others would change how ilha's own ssh connection works)".to_string(),
            ));
        }
    }
    Ok(())
}

fn add_option(option: &str, args: &mut SshArgs) -> Result<(), (String, String)> {
    let refuse = |why: &str| Err((format!("-o {option}"), why.to_string()));
    if option.contains(['\n', '\r']) {
        return refuse("an option is one line");
    }
    // ssh reads `Key=Value` and `Key Value` alike.
    let (key, value) = match option
        .trim()
        .split_once(|c: char| c == '=' || c.is_whitespace())
    {
        Some((key, value)) => (key.trim(), value.trim().trim_start_matches('=').trim()),
        None => return refuse("expected `-o Key=Value`"),
    };
    if key.is_empty() || value.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return refuse("expected `-o Key=Value`");
    }
    let lower = key.to_ascii_lowercase();
    if let Some((_, why)) = REFUSED_OPTIONS.iter().find(|(name, _)| *name == lower) {
        return refuse(why);
    }
    if lower == "proxyjump" {
        add_jump_hosts(value, args);
    } else {
        args.options.push(format!("{key}={value}"));
    }
    Ok(())
}

fn add_jump_hosts(hosts: &str, args: &mut SshArgs) {
    args.jump_hosts.extend(
        hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(str::to_string),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<SshArgs, (String, String)> {
        let mut args = SshArgs::default();
        parse_into(value, &mut args).map(|()| args)
    }

    #[test]
    fn bastions_and_options_are_accepted() {
        let args = parse(r#"-o ProxyCommand="ssh -W %h:%p -q bastion" -J admin@b1,b2 -oProxyJump=b3 -C -i ~/.ssh/k"#)
            .unwrap();
        assert_eq!(args.jump_hosts, ["admin@b1", "b2", "b3"]);
        assert_eq!(
            args.options,
            [
                "ProxyCommand=ssh -W %h:%p -q bastion",
                "Compression=yes",
                "IdentityFile=~/.ssh/k"
            ]
        );
        assert_eq!(
            parse("-o 'ServerAliveCountMax 5'").unwrap().options,
            ["ServerAliveCountMax=5"]
        );
    }

    #[test]
    fn options_that_break_ilha_are_refused_by_name() {
        for (value, refused, why) in [
            (
                "-o StrictHostKeyChecking=no",
                "-o StrictHostKeyChecking=no",
                "ilha checks host keys",
            ),
            (
                "-o UserKnownHostsFile=/dev/null",
                "-o UserKnownHostsFile=/dev/null",
                "known_hosts",
            ),
            (
                "-o controlpath=/tmp/x",
                "-o controlpath=/tmp/x",
                "control connection",
            ),
            ("-o User=admin", "-o User=admin", "ansible_user"),
            ("-M", "-M", "ilha passes on only"),
            ("-S /tmp/ctl", "-S", "ilha passes on only"),
            ("-N", "-N", "ilha passes on only"),
            ("-f", "-f", "ilha passes on only"),
            ("-T", "-T", "ilha passes on only"),
            ("-t", "-t", "ilha passes on only"),
            ("-p 2222", "-p", "ansible_port"),
            ("-o", "-o", "needs a value"),
            ("-o NoValue", "-o NoValue", "Key=Value"),
            (
                "-o \"ProxyCommand=x",
                "-o \"ProxyCommand=x",
                "unbalanced quotes",
            ),
        ] {
            let (argument, reason) = parse(value).unwrap_err();
            assert_eq!(argument, refused, "{value}");
            assert!(reason.contains(why), "{value}: {reason}");
        }
    }
}
