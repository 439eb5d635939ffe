//! `rkt prepare [FLAGS] IMAGE [APP FLAGS] [-- ARGS] [---] ...`: fetch the
//! images, build the pod directory, leave it in `prepared/`, print its UUID.
//! `rkt run` shares all of this through [`PodArgs`] and [`prepare`].

use std::path::PathBuf;

use appc::{Mount, NameValue, PodPort, Volume, VolumeKind};
use clap::Args;

use super::app_args;
use super::fetch::{ImageFetcher, PullPolicy};
use super::format::parse_size;
use super::pod_flags;
use super::stage1_image::Stage1Args;
use crate::error::RktError;
use crate::extract::DEFAULT_MAX_BYTES;
use crate::globals::GlobalOptions;
use crate::pod::manifest::{AppRequest, PodRequest};
use crate::pod::prepare::{prepare_pod, PrepareRequest, PreparedPod};
use crate::pod::{overlay, PodsDir};
use crate::store::{LockMode, Store};

/// The flags `prepare` and `run` share: what goes into the pod.
#[derive(Args, Debug, Clone)]
pub struct PodArgs {
    #[command(flatten)]
    pub stage1: Stage1Args,
    /// When to fetch an image already in the store.
    #[arg(long, value_enum, default_value = "new")]
    pub pull_policy: PullPolicy,
    /// Give every app the caller's environment (lowest precedence).
    #[arg(long)]
    pub inherit_env: bool,
    /// Copy the images into the pod instead of mounting overlays.
    #[arg(long)]
    pub no_overlay: bool,
    /// NAME=VALUE for every app (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = |s: &str| pod_flags::parse_env_var(s, "--set-env"))]
    pub set_env: Vec<NameValue>,
    /// A file of NAME=VALUE lines for every app (repeatable).
    #[arg(long, value_name = "FILE")]
    pub set_env_file: Vec<PathBuf>,
    /// NAME,kind=host,source=PATH[,readOnly=B][,recursive=B] or
    /// NAME,kind=empty[,mode=0755][,uid=N][,gid=N] (repeatable).
    #[arg(long, value_name = "VOLUME", value_parser = pod_flags::parse_volume)]
    pub volume: Vec<Volume>,
    /// volume=NAME,target=PATH for every app (repeatable; after an image,
    /// for that app only).
    #[arg(long, value_name = "MOUNT", value_parser = pod_flags::parse_mount)]
    pub mount: Vec<Mount>,
    /// NAME:[HOSTIP:]HOSTPORT: forward an app port from the host.
    #[arg(long, value_name = "PORT", value_parser = pod_flags::parse_port)]
    pub port: Vec<PodPort>,
    /// Refused: a user namespace shift means nothing for a VM's apps.
    #[arg(long)]
    pub private_users: bool,
    /// Write the pod's UUID to this file.
    #[arg(long, value_name = "FILE")]
    pub uuid_file_save: Option<PathBuf>,
    /// Refuse images that decompress to more than this (e.g. 512M, 8G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_image_size: u64,
    /// Images, each followed by its app flags and `-- ARGS... ---`.
    #[arg(trailing_var_arg = true, value_name = "IMAGE")]
    pub apps: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    /// Print only the UUID.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(globals: &GlobalOptions, args: PrepareArgs) -> Result<(), RktError> {
    let mut prepared = prepare(globals, &args.pod, args.quiet)?;
    prepared.pod.mark_prepared()?;
    save_uuid(&args.pod, &prepared)?;
    println!("{}", prepared.pod.uuid);
    Ok(())
}

/// `--uuid-file-save`: the UUID alone, no newline (as rkt wrote it).
pub fn save_uuid(args: &PodArgs, prepared: &PreparedPod) -> Result<(), RktError> {
    if let Some(file) = &args.uuid_file_save {
        std::fs::write(file, prepared.pod.uuid.as_str()).map_err(RktError::io(format!(
            "writing the pod UUID to {}",
            file.display()
        )))?;
    }
    Ok(())
}

/// Everything up to a complete pod directory, left locked in `prepare/`:
/// the caller moves it on (`mark_prepared` for `prepare`, `mark_running` for `run`).
pub fn prepare(
    globals: &GlobalOptions,
    args: &PodArgs,
    quiet: bool,
) -> Result<PreparedPod, RktError> {
    let apps = app_args::parse(&args.apps).map_err(RktError::Usage)?;
    if apps.is_empty() {
        return Err(RktError::Usage(
            "give at least one image: rkt prepare IMAGE [-- ARGS...]".to_string(),
        ));
    }
    if args.private_users {
        return Err(RktError::Message(
            "--private-users is not supported: each pod already runs in its own VM".to_string(),
        ));
    }
    let mut env_file = Vec::new();
    for file in &args.set_env_file {
        env_file.extend(pod_flags::read_env_file(file).map_err(RktError::Message)?);
    }
    for volume in &args.volume {
        if let (VolumeKind::Host, Some(source)) = (volume.kind, &volume.source) {
            if std::fs::symlink_metadata(source).is_err() {
                return Err(RktError::Message(format!(
                    "volume {}: its source {source} does not exist; create it or fix --volume",
                    volume.name
                )));
            }
        }
    }
    let inherited_env = if args.inherit_env {
        std::env::vars()
            .map(|(name, value)| NameValue { name, value })
            .collect()
    } else {
        Vec::new()
    };

    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let fetcher = ImageFetcher::new(globals, &store, args.max_image_size);
    let stage1 = args.stage1.resolve(&store, &fetcher)?;
    let mut requests = Vec::new();
    for app in apps {
        let id = fetcher.fetch(&app.image, app.signature.as_deref(), args.pull_policy)?;
        let record = store.image(&id)?;
        requests.push(AppRequest {
            image_id: id,
            image: record.manifest,
            overrides: app.overrides,
        });
    }
    let overlay = !args.no_overlay
        && match overlay::check_support(&globals.dir) {
            Ok(()) => true,
            Err(why) => {
                if !quiet {
                    eprintln!("rkt: disabling overlay support: {why}");
                }
                false
            }
        };
    let pods = PodsDir::open(&globals.dir)?;
    let prepared = prepare_pod(
        &store,
        &pods,
        &PrepareRequest {
            stage1,
            pod: PodRequest {
                apps: requests,
                volumes: args.volume.clone(),
                global_mounts: args.mount.clone(),
                inherited_env,
                env_file,
                set_env: args.set_env.clone(),
                ports: args.port.clone(),
            },
            overlay,
        },
    )?;
    for warning in &prepared.warnings {
        eprintln!("rkt: warning: {warning}");
    }
    Ok(prepared)
}
