//! `rkt status [--wait[=DURATION]] [--wait-ready[=DURATION]]
//! [--format=json|json-pretty] UUID`: `key=value` lines (state, created,
//! started, networks, pid, exited, app-NAME=STATUS) as rkt printed them.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Args;

use super::format::{parse_duration, rkt_time};
use super::pod_json::{pod_argument, pod_json, print_json, OutputFormat};
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::info::NetInfo;
use crate::pod::{Pod, PodState, PodsDir};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Wait for the pod to finish: bare or `true` waits forever, a duration
    /// (`30s`, `2m`) at most that long, `false` or `0` not at all.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = parse_wait, value_name = "DURATION")]
    wait: Wait,
    /// Wait for the pod's supervisor to be ready (same values as --wait).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = parse_wait, value_name = "DURATION")]
    wait_ready: Wait,
    /// Output format.
    #[arg(long, value_enum, default_value = "tabbed")]
    format: OutputFormat,
    /// Read the pod's UUID from this file.
    #[arg(long, value_name = "FILE")]
    uuid_file: Option<PathBuf>,
    /// The pod's UUID (or a unique prefix).
    uuid: Option<String>,
}

/// How long `--wait`/`--wait-ready` wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    Forever,
    AtMost(Duration),
}

/// rkt's rule: a boolean, or a duration (zero = no wait).
fn parse_wait(text: &str) -> Result<Wait, String> {
    match text {
        "" | "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Wait::Forever),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(Wait::No),
        _ => match parse_duration(text)? {
            Duration::ZERO => Ok(Wait::No),
            duration => Ok(Wait::AtMost(duration)),
        },
    }
}

/// How often the waits re-check (rkt polled readiness every 100 ms).
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for stage1's `pid` file once the pod is running.
const PID_WAIT: Duration = Duration::from_secs(1);

/// Polls `done` until it is true or the wait runs out.
fn wait_for(
    wait: Wait,
    what: &str,
    mut done: impl FnMut() -> Result<bool, RktError>,
) -> Result<(), RktError> {
    let deadline = match wait {
        Wait::No => return Ok(()),
        Wait::Forever => None,
        Wait::AtMost(duration) => Some(Instant::now() + duration),
    };
    loop {
        if done()? {
            return Ok(());
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(RktError::Message(format!(
                "timed out waiting for the pod {what}"
            )));
        }
        sleep(POLL);
    }
}

pub fn run(globals: &GlobalOptions, args: StatusArgs) -> Result<(), RktError> {
    let wanted = pod_argument(args.uuid.as_deref(), args.uuid_file.as_deref())?;
    let pods = PodsDir::open(&globals.dir)?;
    let uuid = pods.resolve(&wanted)?;
    let mut pod = Pod::load(&pods, &uuid)?;

    wait_for(args.wait_ready, "to be ready", || {
        pod.refresh()?;
        Ok(pod.is_supervisor_ready())
    })?;
    wait_for(args.wait, "to finish", || {
        pod.refresh()?;
        Ok(pod.state().is_finished())
    })?;

    if args.format != OutputFormat::Tabbed {
        return print_json(&pod_json(&pod)?, args.format);
    }
    let state = pod.state();
    println!("state={}", state.as_str());
    if let Some(created) = pod.created()? {
        println!("created={}", rkt_time(created));
    }
    if let Some(started) = pod.started()? {
        println!("started={}", rkt_time(started));
    }
    if state == PodState::Running {
        let networks = pod
            .networks()
            .iter()
            .map(NetInfo::describe)
            .collect::<Vec<_>>()
            .join(", ");
        println!("networks={networks}");
    }
    if state == PodState::Running || state.is_after_run() {
        // stage1 writes `pid` shortly after the pod enters run/.
        let start = Instant::now();
        let pid = loop {
            match pod.pid()? {
                Some(pid) => break Some(pid),
                None if state == PodState::Running && start.elapsed() < PID_WAIT => sleep(POLL),
                None => break None,
            }
        };
        // A pod whose stage1 died before writing a pid still gets its
        // exit facts printed (rkt gave up with an error here).
        if let Some(pid) = pid {
            println!("pid={pid}");
        }
        println!("exited={}", state.is_after_run());
        if state != PodState::Running {
            if let Some(manifest) = pod.manifest()? {
                for app in &manifest.apps {
                    if let Some(code) = pod.app_exit_code(app.name.as_str())? {
                        println!("app-{}={code}", app.name);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_values() {
        assert_eq!(parse_wait("true").unwrap(), Wait::Forever);
        assert_eq!(parse_wait("false").unwrap(), Wait::No);
        assert_eq!(parse_wait("0s").unwrap(), Wait::No);
        assert_eq!(
            parse_wait("1m30s").unwrap(),
            Wait::AtMost(Duration::from_secs(90))
        );
        assert!(parse_wait("soon").is_err());
    }
}
