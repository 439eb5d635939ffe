//! The entrypoints' command lines, exactly as stage0 builds them for interface version 6
//! (docs/pods.md, "The stage1 contract"). A word stage0 would never send is a usage error: it
//! means stage0 and stage1 disagree, which no user can fix by retrying.

use std::path::PathBuf;

use clap::Parser;

use crate::error::Stage1Error;

/// `init` (run): `[--debug] --net=NETS [--interactive] --local-config=DIR --hostname=NAME
/// [--disable-*] [--dns-conf-mode=resolv=..,hosts=..] [--ipc=..] UUID`.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "stage1-kvm run",
    no_binary_name = true,
    disable_help_flag = true
)]
pub struct RunArgs {
    /// Guest console on our stdout, guest-init's setup steps logged there too.
    #[arg(long)]
    pub debug: bool,
    /// The networks: `default`, `default-restricted`, `none` or names from net.d, each with
    /// optional CNI arguments (`NAME:IP=...`), comma-separated.
    #[arg(long, default_value = "default")]
    pub net: String,
    /// Attach the terminal to the app (not supported yet).
    #[arg(long)]
    pub interactive: bool,
    /// rkt's local configuration directory (no kvm setting lives there yet).
    #[arg(long)]
    pub local_config: Option<PathBuf>,
    /// The pod's host name (stage0 defaults it to `rkt-UUID`).
    #[arg(long)]
    pub hostname: Option<String>,
    /// `--insecure-options=capabilities`: accepted; the guest applies no capability limits yet.
    #[arg(long)]
    pub disable_capabilities_restriction: bool,
    /// `--insecure-options=paths`: accepted; nothing to relax in a VM.
    #[arg(long)]
    pub disable_paths: bool,
    /// `--insecure-options=seccomp`: accepted; the guest applies no seccomp filter yet.
    #[arg(long)]
    pub disable_seccomp: bool,
    /// Where the apps' resolv.conf and hosts come from.
    #[arg(long, value_parser = DnsConfMode::parse)]
    pub dns_conf_mode: Option<DnsConfMode>,
    /// The IPC namespace: `auto` and `private` both mean the VM's own.
    #[arg(long, value_parser = ["auto", "private", "parent"])]
    pub ipc: Option<String>,
    /// Warm start (our extension, docs/stage1-kvm.md): restore the VM from a cached snapshot
    /// of a booted guest; `--warm-start=false` boots the kernel.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub warm_start: bool,
    /// The pod's UUID.
    #[arg(value_parser = check_uuid)]
    pub uuid: String,
}

/// `gc`: `[--debug] [--local-config=DIR] UUID`.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "stage1-kvm gc",
    no_binary_name = true,
    disable_help_flag = true
)]
pub struct GcArgs {
    #[arg(long)]
    pub debug: bool,
    #[arg(long)]
    pub local_config: Option<PathBuf>,
    #[arg(value_parser = check_uuid)]
    pub uuid: String,
}

/// `enter`: `--pid=PID --appname=APP -- CMD [ARGS...]` (stage0's `rkt enter`).
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "stage1-kvm enter",
    no_binary_name = true,
    disable_help_flag = true
)]
pub struct EnterArgs {
    /// The pod's stage1 PID (from `pid`); the control channel needs no PID, it is checked by
    /// stage0 already.
    #[arg(long)]
    pub pid: Option<i32>,
    /// The app to enter.
    #[arg(long)]
    pub appname: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `stop`: `[--force] UUID` (stage0's `rkt stop`).
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "stage1-kvm stop",
    no_binary_name = true,
    disable_help_flag = true
)]
pub struct StopArgs {
    /// Kill the VM instead of asking the apps to end.
    #[arg(long)]
    pub force: bool,
    #[arg(value_parser = check_uuid)]
    pub uuid: String,
}

/// One half of `--dns-conf-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfMode {
    /// Stage1's choice: no file from us (guest-init writes localhost and the host name).
    Default,
    /// The host's own file.
    Host,
    /// The file stage0 wrote (`etc/rkt-resolv.conf`, `etc/rkt-hosts`).
    Stage0,
    /// No file at all (resolv.conf only).
    None,
}

/// `--dns-conf-mode=resolv=MODE,hosts=MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfMode {
    pub resolv: ConfMode,
    pub hosts: ConfMode,
}

impl Default for DnsConfMode {
    fn default() -> Self {
        DnsConfMode {
            resolv: ConfMode::Default,
            hosts: ConfMode::Default,
        }
    }
}

impl DnsConfMode {
    pub fn parse(text: &str) -> Result<DnsConfMode, String> {
        let mut mode = DnsConfMode::default();
        for part in text.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=MODE"))?;
            let parsed = match value {
                "default" => ConfMode::Default,
                "host" => ConfMode::Host,
                "stage0" => ConfMode::Stage0,
                "none" if key == "resolv" => ConfMode::None,
                _ => return Err(format!("{value:?} is not a mode for {key}")),
            };
            match key {
                "resolv" => mode.resolv = parsed,
                "hosts" => mode.hosts = parsed,
                _ => return Err(format!("{key:?} is neither resolv nor hosts")),
            }
        }
        Ok(mode)
    }
}

/// A pod UUID as stage0 writes them: 36 characters of lowercase hex and dashes. It ends up on
/// the guest's command line and in a path under /run, so nothing else may pass.
pub fn check_uuid(text: &str) -> Result<String, String> {
    let dashes_at = [8, 13, 18, 23];
    let ok = text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if dashes_at.contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }
        });
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a pod UUID"))
    }
}

/// A host name for the guest's command line: RFC 1123 labels (letters, digits, dashes, not at
/// either end of a label) joined by dots, 253 bytes at most. Nothing that could split or quote
/// a kernel parameter gets through.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Parses an entrypoint's arguments (without argv[0]); clap's verdict becomes one line.
pub fn parse<T: Parser>(words: &[String]) -> Result<T, Stage1Error> {
    T::try_parse_from(words).map_err(|err| {
        let rendered = err.to_string();
        let first = rendered
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("bad arguments")
            .trim_start_matches("error: ")
            .to_string();
        Stage1Error::Usage(format!(
            "stage1 was called with arguments it does not understand ({first}): \
             is this stage1 image built for this rkt?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10";

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn enter_and_stop_command_lines_parse() {
        let enter: EnterArgs = parse(&words(&[
            "--pid=42",
            "--appname=web",
            "--",
            "/bin/sh",
            "-c",
            "echo --x",
        ]))
        .unwrap();
        assert_eq!(enter.pid, Some(42));
        assert_eq!(enter.appname, "web");
        assert_eq!(enter.command, ["/bin/sh", "-c", "echo --x"]);
        assert!(parse::<EnterArgs>(&words(&["--pid=1", "--", "sh"])).is_err());
        let stop: StopArgs = parse(&words(&["--force", UUID])).unwrap();
        assert!(stop.force);
        assert_eq!(stop.uuid, UUID);
        assert!(!parse::<StopArgs>(&words(&[UUID])).unwrap().force);
        assert!(parse::<StopArgs>(&words(&["--force"])).is_err());
        assert!(parse::<StopArgs>(&words(&["../x"])).is_err());
    }

    #[test]
    fn stage0s_full_command_line_parses() {
        let args: RunArgs = parse(&words(&[
            "--debug",
            "--net=none",
            "--local-config=/etc/rkt",
            "--hostname=web-1.example",
            "--disable-seccomp",
            "--dns-conf-mode=resolv=stage0,hosts=host",
            "--ipc=private",
            UUID,
        ]))
        .unwrap();
        assert!(args.debug && args.disable_seccomp && !args.interactive);
        assert_eq!(args.net, "none");
        assert_eq!(args.hostname.as_deref(), Some("web-1.example"));
        assert_eq!(
            args.dns_conf_mode,
            Some(DnsConfMode {
                resolv: ConfMode::Stage0,
                hosts: ConfMode::Host
            })
        );
        assert_eq!(args.uuid, UUID);
        let minimal: RunArgs = parse(&words(&[UUID])).unwrap();
        assert_eq!(minimal.net, "default");
        assert!(
            minimal.warm_start,
            "warm start is on unless stage0 says otherwise"
        );
        let cold: RunArgs = parse(&words(&["--warm-start=false", UUID])).unwrap();
        assert!(!cold.warm_start);
        assert!(parse::<RunArgs>(&words(&["--warm-start=maybe", UUID])).is_err());
        let gc: GcArgs = parse(&words(&["--debug", "--local-config=/x", UUID])).unwrap();
        assert!(gc.debug);
    }

    #[test]
    fn unknown_words_and_bad_uuids_are_one_line_usage_errors() {
        for bad in [
            words(&["--bogus", UUID]),
            words(&["not-a-uuid"]),
            words(&[UUID.to_uppercase().as_str()]),
            words(&[]),
            words(&["--dns-conf-mode=resolv=sometimes", UUID]),
        ] {
            let err = parse::<RunArgs>(&bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains("does not understand"), "{err}");
        }
        assert!(check_uuid("../../../../etc/passwd-aaaaaaaaaaaaaaaaaaa").is_err());
    }

    #[test]
    fn dns_conf_mode_follows_rkt() {
        assert_eq!(
            DnsConfMode::parse("resolv=none,hosts=default").unwrap(),
            DnsConfMode {
                resolv: ConfMode::None,
                hosts: ConfMode::Default
            }
        );
        assert!(DnsConfMode::parse("hosts=none").is_err());
        assert!(DnsConfMode::parse("dns=host").is_err());
        assert!(DnsConfMode::parse("resolv").is_err());
    }

    #[test]
    fn host_names_cannot_break_the_command_line() {
        assert!(is_hostname("rkt-2e1a7c3b"));
        assert!(is_hostname("a.b-c.d"));
        for bad in [
            "",
            "a b",
            "a\"b",
            "-a",
            "a-",
            "a..b",
            "a=b",
            &"x".repeat(64),
        ] {
            assert!(!is_hostname(bad), "{bad:?}");
        }
    }
}
