//! The kernel parameters of pod mode: `rkt.pod=<uuid>` switches it on; `rkt.hostname=` and
//! `rkt.debug=1` tune it. Pod mode needs the pod share (`rkt.share=TAG`, mounted by the share
//! module) and excludes the single-command parameters `rkt.root` and `rkt.status`.

use std::ffi::OsStr;

use thiserror::Error;

use crate::cmdline::{self, KernelParam};
use crate::share::{PARAM_ROOT, PARAM_SHARE, PARAM_STATUS};

pub const PARAM_POD: &str = "rkt.pod";
pub const PARAM_HOSTNAME: &str = "rkt.hostname";
pub const PARAM_DEBUG: &str = "rkt.debug";
/// `rkt.interactive=1`: the pod's one app runs on a terminal the host attaches to over the
/// control channel (`rkt run --interactive`).
pub const PARAM_INTERACTIVE: &str = "rkt.interactive";
/// `rkt.disable=capabilities,paths,seccomp` (any of the three, comma-separated; empty: none):
/// the app hardening the user turned off with `rkt --insecure-options=...` (the stage1 learns
/// it from stage0's `--disable-capabilities-restriction`, `--disable-paths`,
/// `--disable-seccomp`).
pub const PARAM_DISABLE: &str = "rkt.disable";
/// The kernel's limit on a host name (`__NEW_UTS_LEN`).
const MAX_HOSTNAME: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("{PARAM_POD} is set but {PARAM_SHARE} is not; add {PARAM_SHARE}=pod (the pod directory's share)")]
    NeedsShare,

    #[error(
        "{param} cannot be combined with {PARAM_POD}: a pod's apps and statuses come from its \
         manifest; drop {param}"
    )]
    Conflict { param: &'static str },

    #[error("{param}={value:?} is not allowed: {reason}; fix the stage1's kernel command line")]
    Invalid {
        param: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// The app hardening turned off (`rkt.disable=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disabled {
    /// rkt's default capability bounding set and the capability isolators.
    pub capabilities: bool,
    /// The masked and read-only paths under /proc and /sys.
    pub paths: bool,
    /// The seccomp filter (default and isolators).
    pub seccomp: bool,
}

impl Disabled {
    fn parse(value: &str) -> Result<Disabled, ParamError> {
        let mut disabled = Disabled::default();
        for word in value.split(',').filter(|word| !word.is_empty()) {
            match word {
                "capabilities" => disabled.capabilities = true,
                "paths" => disabled.paths = true,
                "seccomp" => disabled.seccomp = true,
                _ => {
                    return Err(ParamError::Invalid {
                        param: PARAM_DISABLE,
                        value: value.to_owned(),
                        reason: "only capabilities, paths and seccomp can be disabled",
                    })
                }
            }
        }
        Ok(disabled)
    }
}

/// Pod mode, as the kernel command line asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodParams {
    pub uuid: String,
    /// `rkt.hostname`, else `rkt-<uuid>` (rkt's default).
    pub hostname: String,
    /// Log each set-up step on the console.
    pub debug: bool,
    /// `rkt.interactive=1`.
    pub interactive: bool,
    /// `rkt.disable=`.
    pub disabled: Disabled,
}

impl PodParams {
    /// `None` without `rkt.pod`.
    pub fn from_params(params: &[KernelParam]) -> Result<Option<PodParams>, ParamError> {
        let Some(uuid) = cmdline::last_value(params, PARAM_POD) else {
            return Ok(None);
        };
        if cmdline::last_value(params, PARAM_SHARE).is_none() {
            return Err(ParamError::NeedsShare);
        }
        for param in [PARAM_ROOT, PARAM_STATUS] {
            if cmdline::last_value(params, param).is_some() {
                return Err(ParamError::Conflict { param });
            }
        }
        let uuid = text(PARAM_POD, uuid)?;
        // A UUID (hex and dashes) keeps the default host name valid.
        if uuid.is_empty()
            || uuid.len() > 36
            || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(ParamError::Invalid {
                param: PARAM_POD,
                value: uuid,
                reason: "it is not a pod UUID",
            });
        }
        let hostname = match cmdline::last_value(params, PARAM_HOSTNAME) {
            None => format!("rkt-{uuid}"),
            Some(value) => {
                let hostname = text(PARAM_HOSTNAME, value)?;
                if hostname.is_empty() || hostname.len() > MAX_HOSTNAME {
                    return Err(ParamError::Invalid {
                        param: PARAM_HOSTNAME,
                        value: hostname,
                        reason: "a host name has 1 to 64 characters",
                    });
                }
                hostname
            }
        };
        let debug = cmdline::last_value(params, PARAM_DEBUG)
            .is_some_and(|value| value != "0" && value != "false");
        let interactive = cmdline::last_value(params, PARAM_INTERACTIVE)
            .is_some_and(|value| value != "0" && value != "false");
        let disabled = match cmdline::last_value(params, PARAM_DISABLE) {
            None => Disabled::default(),
            Some(value) => Disabled::parse(&text(PARAM_DISABLE, value)?)?,
        };
        Ok(Some(PodParams {
            uuid,
            hostname,
            debug,
            interactive,
            disabled,
        }))
    }
}

fn text(param: &'static str, value: &OsStr) -> Result<String, ParamError> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| ParamError::Invalid {
            param,
            value: value.to_string_lossy().into_owned(),
            reason: "it is not UTF-8",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::kernel_params;

    const UUID: &str = "4b8a1e0c-6b1e-4a3f-9f47-0b7f5b0f1a2c";

    fn parse(cmdline: &str) -> Result<Option<PodParams>, ParamError> {
        PodParams::from_params(&kernel_params(cmdline.as_bytes()))
    }

    #[test]
    fn the_contract_command_line() {
        let params = parse(&format!(
            "console=ttyS0 reboot=k panic=-1 quiet rkt.share=pod rkt.pod={UUID}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            params,
            PodParams {
                uuid: UUID.into(),
                hostname: format!("rkt-{UUID}"),
                debug: false,
                interactive: false,
                disabled: Disabled::default(),
            }
        );
        let params = parse(&format!(
            "rkt.share=pod rkt.pod={UUID} rkt.hostname=web-1 rkt.debug=1"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(params.hostname, "web-1");
        assert!(params.debug);
        assert!(!params.interactive);
        let params = parse(&format!("rkt.share=pod rkt.pod={UUID} rkt.interactive=1"))
            .unwrap()
            .unwrap();
        assert!(params.interactive);
    }

    #[test]
    fn disabled_hardening() {
        let disabled = |value: &str| {
            parse(&format!("rkt.share=pod rkt.pod={UUID} {value}")).map(|p| p.unwrap().disabled)
        };
        assert_eq!(disabled(""), Ok(Disabled::default()));
        assert_eq!(disabled("rkt.disable="), Ok(Disabled::default()));
        assert_eq!(
            disabled("rkt.disable=seccomp"),
            Ok(Disabled {
                seccomp: true,
                ..Disabled::default()
            })
        );
        assert_eq!(
            disabled("rkt.disable=capabilities,paths,seccomp"),
            Ok(Disabled {
                capabilities: true,
                paths: true,
                seccomp: true,
            })
        );
        assert!(matches!(
            disabled("rkt.disable=seccomp,image"),
            Err(ParamError::Invalid { .. })
        ));
    }

    #[test]
    fn no_pod_parameter_is_not_pod_mode() {
        assert_eq!(parse("rkt.share=pod rkt.root=root -- sh"), Ok(None));
        assert_eq!(parse(&format!("quiet -- rkt.pod={UUID}")), Ok(None));
    }

    #[test]
    fn bad_combinations_and_values_are_refused() {
        assert_eq!(
            parse(&format!("rkt.pod={UUID}")),
            Err(ParamError::NeedsShare)
        );
        assert_eq!(
            parse(&format!("rkt.share=pod rkt.pod={UUID} rkt.status=s")),
            Err(ParamError::Conflict {
                param: PARAM_STATUS
            })
        );
        for bad in ["rkt.pod=", "rkt.pod=../x", "rkt.pod=not-a-uuid!"] {
            assert!(
                matches!(
                    parse(&format!("rkt.share=pod {bad}")),
                    Err(ParamError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        let long = "h".repeat(65);
        assert!(matches!(
            parse(&format!("rkt.share=pod rkt.pod={UUID} rkt.hostname={long}")),
            Err(ParamError::Invalid { .. })
        ));
    }
}
