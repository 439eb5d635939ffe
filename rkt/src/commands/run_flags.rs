//! The flags `run` and `run-prepared` take beyond what goes into the pod
//! manifest (rkt's runtime flags): networking, DNS, host name, interactive,
//! IPC. They become [`RunOptions`], the stage1's command line.

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::dns::{self, Hosts, Resolv};
use crate::pod::stage1::RunOptions;

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Networks to join: `default`, `none`, or names from net.d, each with
    /// optional `:ARGS` (`host` is impossible for a VM).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "default", default_value = "default",
          value_name = "NETS")]
    pub net: String,
    /// Nameserver IP (repeatable), or `host` (the host's resolv.conf) or
    /// `none`.
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// DNS search domain (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// resolv.conf option (repeatable).
    #[arg(long, value_name = "OPTION")]
    pub dns_opt: Vec<String>,
    /// resolv.conf domain.
    #[arg(long, value_name = "DOMAIN")]
    pub dns_domain: Option<String>,
    /// IP=HOSTNAME for the pod's /etc/hosts (repeatable), or `host`.
    #[arg(long, value_name = "IP=HOSTNAME")]
    pub hosts_entry: Vec<String>,
    /// The pod's host name (default `rkt-UUID`).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Attach the terminal to the (single) app.
    #[arg(long)]
    pub interactive: bool,
    /// IPC namespace: auto or private (`parent` is impossible for a VM).
    #[arg(long, value_name = "MODE", value_parser = ["auto", "private", "parent"])]
    pub ipc: Option<String>,
    /// Register with the metadata service (not available in this engine).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub mds_register: bool,
    /// Start the pod's VM from a cached snapshot of a booted guest (the kvm stage1's warm
    /// start; our extension, not in upstream rkt). `--warm-start=false` boots the kernel.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub warm_start: bool,
}

impl RuntimeArgs {
    /// Checks the flags and turns them into stage1's options.
    pub fn run_options(&self, globals: &GlobalOptions) -> Result<RunOptions, RktError> {
        if let Some(hostname) = &self.hostname {
            if !dns::is_hostname(hostname) {
                return Err(RktError::Usage(format!(
                    "--hostname {hostname:?} is not a host name (letters, digits, dashes and dots)"
                )));
            }
        }
        let resolv = Resolv::from_flags(
            &self.dns,
            &self.dns_search,
            &self.dns_opt,
            self.dns_domain.as_deref(),
        )
        .map_err(RktError::Usage)?;
        let hosts = Hosts::from_flags(&self.hosts_entry).map_err(RktError::Usage)?;
        for net in self.net.split(',') {
            let name = net.split(':').next().unwrap_or_default();
            if name.is_empty() {
                return Err(RktError::Usage(format!(
                    "--net={}: empty network name",
                    self.net
                )));
            }
            if name == "host" {
                return Err(RktError::Message(
                    "--net=host is impossible: a pod's apps run in their own VM, which cannot \
                     share the host's network namespace; use --net=default (or none)"
                        .to_string(),
                ));
            }
        }
        if self.ipc.as_deref() == Some("parent") {
            return Err(RktError::Message(
                "--ipc=parent is impossible: a pod's apps run in their own VM, which cannot \
                 share the host's IPC namespace; use auto or private"
                    .to_string(),
            ));
        }
        if self.mds_register {
            return Err(RktError::Message(
                "--mds-register: this engine has no metadata service".to_string(),
            ));
        }
        Ok(RunOptions {
            debug: globals.debug,
            net: self.net.clone(),
            interactive: self.interactive,
            local_config: globals.local_config.clone(),
            hostname: self.hostname.clone(),
            resolv,
            hosts,
            disable_capabilities: globals.insecure.capabilities,
            disable_paths: globals.insecure.paths,
            disable_seccomp: globals.insecure.seccomp,
            ipc: self.ipc.clone(),
            no_warm_start: !self.warm_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;
    use crate::globals::InsecureOptions;
    use crate::pod::dns::ConfMode;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    #[test]
    fn flags_become_stage1_options() {
        let globals = GlobalOptions {
            dir: PathBuf::from("/var/lib/rkt"),
            local_config: PathBuf::from("/etc/rkt"),
            system_config: PathBuf::from("/usr/lib/rkt"),
            user_config: None,
            insecure: InsecureOptions::parse("all-run").unwrap(),
            debug: true,
        };
        let cli = Cli::parse_from([
            "x",
            "--net",
            "--dns=10.0.0.1",
            "--hosts-entry=host",
            "--hostname=pod-1",
            "--ipc=private",
        ]);
        let options = cli.runtime.run_options(&globals).unwrap();
        assert_eq!(options.net, "default");
        assert!(options.debug);
        assert_eq!(options.resolv.mode, ConfMode::Stage0);
        assert_eq!(options.hosts.mode, ConfMode::Host);
        assert_eq!(options.hostname.as_deref(), Some("pod-1"));
        assert!(options.disable_capabilities && options.disable_paths && options.disable_seccomp);
        assert_eq!(options.local_config, PathBuf::from("/etc/rkt"));
        let none = Cli::parse_from(["x", "--net=none"])
            .runtime
            .run_options(&globals)
            .unwrap();
        assert_eq!(none.net, "none");
        assert_eq!(none.resolv.mode, ConfMode::Default);
        assert!(!none.no_warm_start, "warm start is the default");
        let cold = Cli::parse_from(["x", "--warm-start=false"])
            .runtime
            .run_options(&globals)
            .unwrap();
        assert!(cold.no_warm_start);
        assert!(Cli::try_parse_from(["x", "--warm-start=perhaps"]).is_err());
    }
}
