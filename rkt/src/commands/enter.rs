//! `rkt enter [--app=NAME] UUID [CMD [ARGS...]]`: run a command inside a running app, through
//! the pod's stage1 `enter` entrypoint (`<enter> --pid=PID --appname=APP -- CMD...`, exec'd
//! from the pod directory, as rkt did). The kvm stage1 runs it in the guest over the vsock
//! control channel, with a terminal when stdin is one, and exits with the command's code,
//! which (since we exec) is ours.

use std::os::unix::process::CommandExt;

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::{stage1, PodsDir};

/// rkt's default was /bin/bash; most small images (busybox, alpine) have only /bin/sh.
pub const DEFAULT_COMMAND: &str = "/bin/sh";

#[derive(Args, Debug)]
pub struct EnterArgs {
    /// The app to enter (needed when the pod has several).
    #[arg(long, value_name = "NAME")]
    app: Option<String>,
    /// The pod's UUID (or a unique prefix).
    uuid: String,
    /// The command and its arguments (default /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(globals: &GlobalOptions, args: EnterArgs) -> Result<(), RktError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RktError::Message(
            "rkt enter needs root (it reaches the pod's VM through a socket only root may \
             use); run it with sudo"
                .to_string(),
        ));
    }
    let pods = PodsDir::open(&globals.dir)?;
    let pod = super::running_pod::load(&pods, &args.uuid, "entered")?;
    let apps: Vec<String> = pod
        .manifest()?
        .map(|m| m.apps.iter().map(|a| a.name.to_string()).collect())
        .unwrap_or_default();
    let app = choose_app(&apps, args.app.as_deref(), &pod.uuid.to_string())?;
    let pid = pod.pid()?.ok_or_else(|| {
        RktError::Message(format!(
            "pod {} has no pid yet (its stage1 is starting); try again",
            pod.uuid
        ))
    })?;
    let program = super::running_pod::entrypoint(&pod, stage1::ENTRYPOINT_ENTER)?;
    let command = if args.command.is_empty() {
        vec![DEFAULT_COMMAND.to_string()]
    } else {
        args.command
    };
    let dir = pod.path();
    // Our pod descriptor is close-on-exec (std opens files that way): stage1 inherits no lock.
    let err = std::process::Command::new(&program)
        .arg(format!("--pid={pid}"))
        .arg(format!("--appname={app}"))
        .arg("--")
        .args(&command)
        .current_dir(&dir)
        .exec();
    Err(RktError::Message(format!(
        "cannot run the stage1 enter entrypoint {}: {err}",
        program.display()
    )))
}

/// The app to enter: `--app`, which must be one of the pod's, else the pod's only app.
fn choose_app(apps: &[String], wanted: Option<&str>, uuid: &str) -> Result<String, RktError> {
    match wanted {
        Some(name) if apps.iter().any(|a| a == name) => Ok(name.to_string()),
        Some(name) => Err(RktError::Message(format!(
            "pod {uuid} has no app named {name:?}; its apps: {}",
            apps.join(", ")
        ))),
        None => match apps {
            [only] => Ok(only.clone()),
            [] => Err(RktError::Message(format!("pod {uuid} has no apps"))),
            _ => Err(RktError::Message(format!(
                "pod {uuid} has several apps ({}); choose one with --app=NAME",
                apps.join(", ")
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_chosen_or_the_error_says_how() {
        let one = vec!["web".to_string()];
        let two = vec!["web".to_string(), "db".to_string()];
        assert_eq!(choose_app(&one, None, "u").unwrap(), "web");
        assert_eq!(choose_app(&two, Some("db"), "u").unwrap(), "db");
        let err = choose_app(&two, None, "u").unwrap_err().to_string();
        assert!(
            err.contains("--app=NAME") && err.contains("web, db"),
            "{err}"
        );
        let err = choose_app(&one, Some("nope"), "u").unwrap_err().to_string();
        assert!(err.contains("no app named \"nope\""), "{err}");
    }
}
