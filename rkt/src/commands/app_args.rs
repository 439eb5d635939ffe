//! rkt's image-argument grammar for `prepare` and `run`:
//!
//! ```text
//! IMAGE [APP FLAGS...] [-- ARG...] [---] IMAGE ...
//! ```
//!
//! Per-app flags (`--exec`, `--user`, `--mount`, ...) follow their image;
//! `--` starts arguments appended to the app's exec line, which run until a
//! lone `---` (or the end). Pod-wide flags go before the first image.

use std::path::PathBuf;

use appc::AcName;

use super::pod_flags;
use crate::pod::manifest::AppOverrides;

/// One image argument and its per-app flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppArgs {
    pub image: String,
    /// `--signature FILE` for this image.
    pub signature: Option<PathBuf>,
    pub overrides: AppOverrides,
}

/// The per-app flags.
const APP_FLAGS: &[&str] = &[
    "exec",
    "user",
    "group",
    "supplementary-gids",
    "working-dir",
    "readonly-rootfs",
    "environment",
    "mount",
    "name",
    "memory",
    "cpu",
    "cpu-shares",
    "oom-score-adj",
    "caps-retain",
    "caps-remove",
    "seccomp",
    "annotation",
    "user-annotation",
    "user-label",
    "signature",
];

/// Flags that take no value (an optional `=BOOL`).
const BOOL_FLAGS: &[&str] = &["readonly-rootfs"];

/// Pod-wide flags that rkt users sometimes place after an image: refused
/// with a hint rather than taken for an image.
const POD_FLAGS: &[&str] = &[
    "volume",
    "set-env",
    "set-env-file",
    "inherit-env",
    "no-overlay",
    "pull-policy",
    "port",
    "quiet",
    "uuid-file-save",
    "hostname",
    "net",
    "dns",
    "interactive",
];

/// Splits `args` (everything from the first image on) into apps.
pub fn parse(args: &[String]) -> Result<Vec<AppArgs>, String> {
    let mut apps: Vec<AppArgs> = Vec::new();
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        if arg == "---" {
            continue;
        }
        if arg == "--" {
            let Some(app) = apps.last_mut() else {
                return Err("\"--\" must follow an image: IMAGE -- ARGS...".to_string());
            };
            while index < args.len() && args[index] != "---" {
                app.overrides.args.push(args[index].clone());
                index += 1;
            }
            continue;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            apps.push(AppArgs {
                image: arg.clone(),
                ..AppArgs::default()
            });
            continue;
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        if POD_FLAGS.contains(&name) {
            return Err(format!(
                "--{name} applies to the whole pod: put it before the first image"
            ));
        }
        if !APP_FLAGS.contains(&name) {
            return Err(unknown_flag(name));
        }
        let value = if BOOL_FLAGS.contains(&name) {
            inline_value.unwrap_or_else(|| "true".to_string())
        } else if let Some(value) = inline_value {
            value
        } else if index < args.len() {
            index += 1;
            args[index - 1].clone()
        } else {
            return Err(format!("--{name} needs a value"));
        };
        let Some(app) = apps.last_mut() else {
            return Err(format!("--{name} must follow the image it applies to"));
        };
        apply(app, name, &value)?;
    }
    Ok(apps)
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("--{name} is given twice for one image"));
    }
    *slot = Some(value);
    Ok(())
}

fn apply(app: &mut AppArgs, name: &str, value: &str) -> Result<(), String> {
    let o = &mut app.overrides;
    match name {
        "exec" if value.is_empty() => return Err("--exec needs a program".to_string()),
        "exec" => set_once(&mut o.exec, value.to_string(), name)?,
        "user" if value.is_empty() => return Err("--user must not be empty".to_string()),
        "user" => set_once(&mut o.user, value.to_string(), name)?,
        "group" if value.is_empty() => return Err("--group must not be empty".to_string()),
        "group" => set_once(&mut o.group, value.to_string(), name)?,
        "supplementary-gids" => set_once(
            &mut o.supplementary_gids,
            pod_flags::parse_gids(value)?,
            name,
        )?,
        "working-dir" => {
            if !value.starts_with('/') {
                return Err(format!("--working-dir {value:?} must be an absolute path"));
            }
            set_once(&mut o.working_dir, value.to_string(), name)?
        }
        "readonly-rootfs" => {
            o.readonly_rootfs = match value {
                "true" => true,
                "false" => false,
                _ => return Err(format!("--readonly-rootfs={value:?}: use true or false")),
            }
        }
        "environment" => o
            .environment
            .push(pod_flags::parse_env_var(value, "--environment")?),
        "mount" => o.mounts.push(pod_flags::parse_mount(value)?),
        "name" => {
            let app_name = AcName::try_from(value).map_err(|problem| {
                format!("--name {value:?} is not a valid app name: {problem}")
            })?;
            set_once(&mut o.name, app_name, name)?
        }
        "memory" | "cpu" => o.isolators.push(pod_flags::parse_resource(name, value)?),
        "cpu-shares" => o.isolators.push(pod_flags::parse_integer_isolator(
            "os/linux/cpu-shares",
            "--cpu-shares",
            value,
        )?),
        "oom-score-adj" => o.isolators.push(pod_flags::parse_integer_isolator(
            "os/linux/oom-score-adj",
            "--oom-score-adj",
            value,
        )?),
        "caps-retain" | "caps-remove" => {
            let isolator = format!("os/linux/capabilities-{}-set", &name[5..]);
            if o.isolators
                .iter()
                .any(|i| i.name.as_str().starts_with("os/linux/capabilities-"))
            {
                return Err("use one of --caps-retain and --caps-remove per image".to_string());
            }
            o.isolators.push(pod_flags::parse_caps(
                &isolator,
                &format!("--{name}"),
                value,
            )?)
        }
        "seccomp" => {
            if o.isolators
                .iter()
                .any(|i| i.name.as_str().starts_with("os/linux/seccomp-"))
            {
                return Err("give --seccomp once per image".to_string());
            }
            o.isolators.push(pod_flags::parse_seccomp(value)?)
        }
        "annotation" => {
            let (key, val) = pod_flags::parse_key_value(value, "--annotation")?;
            let key = appc::AcIdentifier::try_from(key.as_str())
                .map_err(|problem| format!("--annotation {key:?}: {problem}"))?;
            o.annotations.push(appc::Annotation {
                name: key,
                value: val,
            })
        }
        "user-annotation" => {
            let (key, val) = pod_flags::parse_key_value(value, "--user-annotation")?;
            o.user_annotations.insert(key, val);
        }
        "user-label" => {
            let (key, val) = pod_flags::parse_key_value(value, "--user-label")?;
            o.user_labels.insert(key, val);
        }
        "signature" => set_once(&mut app.signature, PathBuf::from(value), name)?,
        _ => return Err(unknown_flag(name)),
    }
    Ok(())
}

fn unknown_flag(name: &str) -> String {
    format!(
        "unknown flag --{name} for an image (app flags: --{})",
        APP_FLAGS.join(", --")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn images_flags_and_arguments() {
        let apps = parse(&args(&[
            "one.aci",
            "--exec=/bin/echo",
            "--user",
            "nobody",
            "--readonly-rootfs",
            "--environment=A=1",
            "--mount",
            "volume=data,target=/data",
            "--memory=64M",
            "--seccomp",
            "mode=remove,errno=EPERM,mount",
            "--",
            "--not-a-flag",
            "x",
            "---",
            "example.com/two",
            "--name=second",
            "--readonly-rootfs=false",
            "--",
            "y",
        ]))
        .unwrap();
        assert_eq!(apps.len(), 2);
        let one = &apps[0].overrides;
        assert_eq!(apps[0].image, "one.aci");
        assert_eq!(one.exec.as_deref(), Some("/bin/echo"));
        assert_eq!(one.user.as_deref(), Some("nobody"));
        assert!(one.readonly_rootfs);
        assert_eq!(one.environment[0].name, "A");
        assert_eq!(one.mounts[0].path, "/data");
        assert_eq!(one.isolators[0].name.as_str(), "resource/memory");
        assert_eq!(
            one.isolators[1].name.as_str(),
            "os/linux/seccomp-remove-set"
        );
        assert_eq!(one.isolators[1].value["errno"], "EPERM");
        assert_eq!(one.args, ["--not-a-flag", "x"]);
        let two = &apps[1].overrides;
        assert_eq!(two.name.as_ref().unwrap().as_str(), "second");
        assert!(!two.readonly_rootfs);
        assert_eq!(two.args, ["y"]);
    }

    #[test]
    fn misuse_is_explained() {
        for (list, says) in [
            (&["--exec=/x", "img"][..], "must follow"),
            (&["--", "x"][..], "must follow an image"),
            (&["img", "--volume=a,kind=empty"][..], "whole pod"),
            (&["img", "--bogus=1"][..], "unknown flag --bogus"),
            (&["img", "--exec"][..], "needs a value"),
            (&["img", "--bogus"][..], "unknown flag --bogus"),
            (&["img", "--exec=/a", "--exec=/b"][..], "twice"),
            (&["img", "--working-dir=rel"][..], "absolute"),
            (&["img", "--name=Bad_Name"][..], "valid app name"),
            (&["img", "--readonly-rootfs=maybe"][..], "true or false"),
            (&["img", "--supplementary-gids=a"][..], "group ID"),
            (&["img", "--memory=lots"][..], "quantity"),
            (
                &["img", "--caps-retain=CAP_A", "--caps-remove=CAP_B"][..],
                "one of",
            ),
            (
                &[
                    "img",
                    "--seccomp=mode=remove,mount",
                    "--seccomp=mode=retain,read",
                ][..],
                "once",
            ),
            (&["img", "--seccomp=mount"][..], "mode="),
        ] {
            let err = parse(&args(list)).unwrap_err();
            assert!(err.contains(says), "{list:?}: {err}");
        }
    }
}
