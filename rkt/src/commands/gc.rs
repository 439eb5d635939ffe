//! `rkt gc [--grace-period=30m] [--expire-prepared=24h] [--mark-only]`:
//! rkt's two-pass pod garbage collection. The mark pass moves exited pods
//! to `exited-garbage/` (the rename's ctime starts their grace period) and
//! failed prepares to `garbage/`; the sweep removes exited pods whose grace
//! period is over, prepared pods never run within `--expire-prepared`, and
//! everything in `garbage/`.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use clap::Args;

use super::format::parse_duration;
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::info::now_nanos;
use crate::pod::{remove, Pod, PodState, PodsDir, StateDir};

#[derive(Args, Debug)]
pub struct GcArgs {
    /// How long exited pods stay in the garbage before removal.
    #[arg(long, value_parser = parse_duration, default_value = "30m", value_name = "DURATION")]
    grace_period: Duration,
    /// How long a prepared pod may wait for `run-prepared`.
    #[arg(long, value_parser = parse_duration, default_value = "24h", value_name = "DURATION")]
    expire_prepared: Duration,
    /// Only move exited and failed pods to the garbage (records when they
    /// stopped); remove nothing.
    #[arg(long)]
    mark_only: bool,
}

/// An embryo is locked and renamed within moments of its creation; one
/// older than this was left by a crash at that very moment.
const STALE_EMBRYO: Duration = Duration::from_secs(60);

/// Nanoseconds since the pod directory's ctime (the last state rename), from `fstat` of the
/// descriptor the pod was loaded with (never a path lookup).
fn age(pod: &Pod) -> Result<Duration, RktError> {
    let meta = pod
        .lock()
        .metadata()
        .map_err(RktError::io(format!("reading pod {}", pod.uuid)))?;
    let changed = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
    let nanos = (now_nanos() - changed).max(0);
    Ok(Duration::from_nanos(nanos as u64))
}

pub fn run(globals: &GlobalOptions, args: GcArgs) -> Result<(), RktError> {
    let pods = PodsDir::open(&globals.dir)?;
    let mut failures = Vec::new();
    let mut note = |uuid: &dyn std::fmt::Display, err: RktError| {
        eprintln!("rkt: pod {uuid}: {err}");
        failures.push(uuid.to_string());
    };

    // Mark.
    for mut pod in Pod::load_all(&pods, &[StateDir::Run])? {
        if pod.state() == PodState::Exited {
            eprintln!("rkt: moving pod {} to garbage", pod.uuid);
            if let Err(err) = pod.mark_exited_garbage() {
                note(&pod.uuid, err.into());
            }
        }
    }
    for mut pod in Pod::load_all(&pods, &[StateDir::Prepare, StateDir::Embryo])? {
        let stale_embryo =
            pod.state() == PodState::Embryo && age(&pod).is_ok_and(|age| age > STALE_EMBRYO);
        if pod.state() == PodState::AbortedPrepare || stale_embryo {
            eprintln!("rkt: moving failed prepare {} to garbage", pod.uuid);
            if let Err(err) = pod.mark_garbage() {
                note(&pod.uuid, err.into());
            }
        }
    }
    if args.mark_only {
        return finish(failures);
    }

    // Sweep.
    for mut pod in Pod::load_all(&pods, &[StateDir::Prepared])? {
        if age(&pod)? > args.expire_prepared {
            eprintln!("rkt: moving expired prepared pod {} to garbage", pod.uuid);
            if let Err(err) = pod.mark_garbage() {
                note(&pod.uuid, err.into());
            }
        }
    }
    for pod in Pod::load_all(&pods, &[StateDir::ExitedGarbage])? {
        if pod.state() != PodState::ExitedGarbage {
            continue; // another gc is deleting it
        }
        if age(&pod)? <= args.grace_period {
            eprintln!(
                "rkt: pod {} not removed: still within the grace period ({})",
                pod.uuid,
                humantime(args.grace_period)
            );
            continue;
        }
        sweep(&pod, globals, &mut note);
    }
    for pod in Pod::load_all(&pods, &[StateDir::Garbage])? {
        if pod.state() == PodState::Garbage {
            sweep(&pod, globals, &mut note);
        }
    }
    // Warm-start snapshots of stage1 images no longer in the store (our extension).
    if let Err(err) = super::snapshot::remove_stale(&globals.dir) {
        note(&"warm-start snapshots", err);
    }
    finish(failures)
}

fn sweep(
    pod: &Pod,
    globals: &GlobalOptions,
    note: &mut impl FnMut(&dyn std::fmt::Display, RktError),
) {
    // Busy: another gc or rm took it first.
    if pod.lock_exclusive().is_err() {
        return;
    }
    println!("Garbage collecting pod \"{}\"", pod.uuid);
    if let Err(err) = remove::delete(pod, &globals.local_config) {
        note(&pod.uuid, err.into());
    }
}

fn finish(failures: Vec<String>) -> Result<(), RktError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RktError::Message(format!(
            "{} pods could not be collected ({}); see the messages above",
            failures.len(),
            failures.join(", ")
        )))
    }
}

fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => format!("{}ms", duration.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
