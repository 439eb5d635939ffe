//! `rkt prepare [FLAGS] IMAGE [APP FLAGS] [-- ARGS] [---] ...`: fetch the
//! images, build the pod directory, leave it in `prepared/`, print its UUID.
//! `rkt run` shares all of this through [`PodArgs`] and [`prepare`].

use std::path::{Path, PathBuf};

use appc::{Mount, NameValue, PodManifest, PodPort, Volume, VolumeKind};
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
use crate::pod::prepare::{prepare_pod, PodSource, PrepareRequest, PreparedPod};
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
    /// Use this complete pod manifest instead of images and app flags (its
    /// images must be in the store).
    #[arg(long, value_name = "FILE")]
    pub pod_manifest: Option<PathBuf>,
    /// Refuse images that decompress to more than this (e.g. 512M, 8G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_image_size: u64,
    /// Bound what the pod may write on the host (its apps' file system changes, empty
    /// volumes) to SIZE (e.g. 2G), as a project quota on the pod's directory; refused where
    /// the data directory's file system keeps no project quotas.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk_limit: Option<u64>,
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
    if args.private_users {
        return Err(RktError::Message(
            "--private-users is not supported: each pod already runs in its own VM".to_string(),
        ));
    }
    // Flag mistakes first, then the stage1, then the (maybe slow) images.
    let wanted = match &args.pod_manifest {
        Some(file) => Wanted::Manifest(from_manifest_file(args, file)?),
        None => Wanted::Flags(pod_request(args)?),
    };
    let mut store = Store::open(&globals.dir, LockMode::Shared)?;
    crate::timing::mark(globals, "opened the store");
    store.set_max_image_size(args.max_image_size);
    let fetcher = ImageFetcher::new(globals, &store, args.max_image_size);
    let stage1_defaults = super::stage1_image::Stage1Defaults::load(globals)?;
    let stage1 = args.stage1.resolve(&store, &fetcher, &stage1_defaults)?;
    crate::timing::mark(globals, "found the stage1 in the store");
    let pod = match wanted {
        Wanted::Manifest(pod) => pod,
        Wanted::Flags(request) => from_flags(args, request, &store, &fetcher)?,
    };
    crate::timing::mark(globals, "fetched the stage1 and the images into the store");
    finish(globals, args, quiet, &store, stage1, pod)
}

/// What the command line asks for, checked but not fetched yet.
enum Wanted {
    Flags(FlagRequest),
    Manifest(PodSource),
}

/// The flags' part of the pod, checked before anything is fetched.
struct FlagRequest {
    apps: Vec<app_args::AppArgs>,
    env_file: Vec<NameValue>,
    inherited_env: Vec<NameValue>,
}

fn pod_request(args: &PodArgs) -> Result<FlagRequest, RktError> {
    let apps = app_args::parse(&args.apps).map_err(RktError::Usage)?;
    if apps.is_empty() {
        return Err(RktError::Usage(
            "give at least one image: rkt prepare IMAGE [-- ARGS...]".to_string(),
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
    Ok(FlagRequest {
        apps,
        env_file,
        inherited_env,
    })
}

/// Fetches the images (as the pull policy allows) and assembles the request.
fn from_flags(
    args: &PodArgs,
    request: FlagRequest,
    store: &Store,
    fetcher: &ImageFetcher,
) -> Result<PodSource, RktError> {
    let mut apps = Vec::new();
    for app in request.apps {
        let fetched =
            fetcher.fetch_named(&app.image, app.signature.as_deref(), args.pull_policy)?;
        let record = store.image(&fetched.id)?;
        let default_name = docker_app_name(store, &record, fetched.name.as_deref())?;
        apps.push(AppRequest {
            image_id: fetched.id,
            image: record.manifest,
            overrides: app.overrides,
            default_name,
        });
    }
    Ok(PodSource::Flags(PodRequest {
        apps,
        volumes: args.volume.clone(),
        global_mounts: args.mount.clone(),
        inherited_env: request.inherited_env,
        env_file: request.env_file,
        set_env: args.set_env.clone(),
        ports: args.port.clone(),
    }))
}

/// A Docker/OCI image's default app name, as rkt's docker2aci gave it: the
/// last path element of its repository (`nginx` for
/// `docker.io/library/nginx:1.25`), from the name it was run by, else from
/// its newest Docker-style name. `None` for an ACI, or an image known only
/// by transport names (`oci:/srv/layout:tag`): then the manifest's name.
fn docker_app_name(
    store: &Store,
    record: &crate::store::ImageRecord,
    used: Option<&str>,
) -> Result<Option<appc::AcName>, RktError> {
    if record.format != crate::store::ImageFormat::Oci {
        return Ok(None);
    }
    let mut names: Vec<String> = used.map(str::to_string).into_iter().collect();
    names.extend(store.names_of(&record.id)?.into_iter().rev());
    for name in names {
        if let Ok(parsed) = crate::image::reference::parse(&name) {
            // The repository passed the reference grammar; `app_name_from`
            // keeps only [a-z0-9-] of it and checks the AC name rules.
            return Ok(Some(crate::pod::manifest::app_name_from(
                parsed.base_name(),
            )?));
        }
    }
    Ok(None)
}

/// `--pod-manifest FILE`: only the stage1, overlay and UUID flags still
/// apply, as in rkt.
fn from_manifest_file(args: &PodArgs, file: &Path) -> Result<PodSource, RktError> {
    let conflicting = !args.apps.is_empty()
        || !args.volume.is_empty()
        || !args.mount.is_empty()
        || !args.port.is_empty()
        || !args.set_env.is_empty()
        || !args.set_env_file.is_empty()
        || args.inherit_env
        || args.pull_policy != PullPolicy::New;
    if conflicting {
        return Err(RktError::Usage(
            "--pod-manifest describes the whole pod: drop the images and the --volume, --mount, \
             --port, --set-env*, --inherit-env and --pull-policy flags"
                .to_string(),
        ));
    }
    let bytes = std::fs::read(file).map_err(RktError::io(format!(
        "reading the pod manifest {}",
        file.display()
    )))?;
    let manifest = PodManifest::from_json(&bytes)
        .map_err(|err| RktError::Message(format!("pod manifest {}: {err}", file.display())))?;
    if manifest.apps.is_empty() {
        return Err(RktError::Message(format!(
            "pod manifest {} has no apps",
            file.display()
        )));
    }
    Ok(PodSource::Manifest { manifest, bytes })
}

fn finish(
    globals: &GlobalOptions,
    args: &PodArgs,
    quiet: bool,
    store: &Store,
    stage1: appc::ImageId,
    pod: PodSource,
) -> Result<PreparedPod, RktError> {
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
        store,
        &pods,
        &PrepareRequest {
            stage1,
            pod,
            overlay,
            disk_limit: args.disk_limit,
        },
    )?;
    for warning in &prepared.warnings {
        eprintln!("rkt: warning: {warning}");
    }
    Ok(prepared)
}
