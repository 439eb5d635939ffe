//! `rkt`, stage0: the command line. This file only parses arguments (clap)
//! and dispatches; each command lives in `commands/`. Runtime errors print one
//! `rkt: ...` line and exit 254; usage errors exit 2 (clap's own handling).

mod commands;
mod config;
mod error;
mod extract;
mod fetch;
mod globals;
mod image;
mod pod;
mod private_dir;
mod store;
mod terminal;
#[cfg(test)]
mod testutil;
mod timing;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use globals::{GlobalOptions, InsecureOptions};

/// Exit status for runtime errors, as rkt used.
const EXIT_RUNTIME_ERROR: u8 = 254;
/// Exit status for command-line mistakes, as clap's own errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "rkt",
    version,
    about = "rkt: run pods of app container images, each pod in its own KVM micro-VM"
)]
struct Cli {
    /// Data directory: image store and pods [default: paths.d's "data", else /var/lib/rkt].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Local (administrator) configuration directory, e.g. trusted keys.
    #[arg(long, global = true, default_value = "/etc/rkt", value_name = "DIR")]
    local_config: PathBuf,
    /// Vendor configuration directory.
    #[arg(
        long,
        global = true,
        default_value = "/usr/lib/rkt",
        value_name = "DIR"
    )]
    system_config: PathBuf,
    /// Per-user configuration directory (read after the system and local ones).
    #[arg(long, global = true, value_name = "DIR")]
    user_config: Option<PathBuf>,
    /// Comma-separated security checks to skip: none, image, tls, ondisk,
    /// http, pubkey, capabilities, paths, seccomp, all-fetch, all-run, all.
    /// Given more than once, the last list counts (as in rkt): `none` at the end turns every
    /// check back on.
    #[arg(long, global = true, action = clap::ArgAction::Append, value_parser = InsecureOptions::parse, value_name = "OPTIONS")]
    insecure_options: Vec<InsecureOptions>,
    /// Print more debug information to stderr.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch images into the store and print their IDs.
    Fetch(commands::fetch::FetchArgs),
    /// Trust a key for verifying signed images.
    Trust(commands::trust::TrustArgs),
    /// Operate on images in the store.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Run a pod in a KVM micro-VM.
    Run(Box<commands::run::RunArgs>),
    /// Prepare a pod (fetch and lay out its images) and print its UUID.
    Prepare(Box<commands::prepare::PrepareArgs>),
    /// Run a prepared pod.
    RunPrepared(commands::run_prepared::RunPreparedArgs),
    /// List pods.
    List(commands::list::ListArgs),
    /// Print a pod's state, times, PID and exit statuses.
    Status(commands::status::StatusArgs),
    /// Print a pod's manifest.
    CatManifest(commands::cat_manifest::CatManifestArgs),
    /// Remove pods that are not running.
    Rm(commands::rm::RmArgs),
    /// Garbage-collect exited and failed pods.
    Gc(commands::gc::GcArgs),
    /// Stop running pods (SIGTERM to their apps; --force kills the VM).
    Stop(commands::stop::StopArgs),
    /// Run a command (default /bin/sh) inside a running pod's app.
    Enter(commands::enter::EnterArgs),
    /// Print the version and features.
    Version,
    /// Print the configuration in effect (JSON, as rkt's config command).
    Config(commands::config::ConfigArgs),
    /// List or clear the kvm stage1's warm-start snapshots (our extension).
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut globals = GlobalOptions {
        dir: cli.dir.clone().unwrap_or_default(),
        local_config: cli.local_config,
        system_config: cli.system_config,
        user_config: cli.user_config,
        insecure: cli.insecure_options.last().copied().unwrap_or_default(),
        debug: cli.debug,
    };
    if cli.dir.is_none() {
        // No --dir: the configuration's paths.d may name the data directory.
        match config::Stage0Config::load(&globals.config_dirs()) {
            Ok(config) => {
                globals.dir = config
                    .paths
                    .data
                    .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR))
            }
            Err(err) => {
                eprintln!("rkt: {err}");
                return ExitCode::from(EXIT_RUNTIME_ERROR);
            }
        }
    }
    let needs_root = match &cli.command {
        Command::Run(_) => Some("run"),
        Command::Prepare(_) => Some("prepare"),
        Command::RunPrepared(_) => Some("run-prepared"),
        Command::Rm(_) => Some("rm"),
        Command::Gc(_) => Some("gc"),
        Command::Snapshot(commands::snapshot::SnapshotCommand::Clear) => Some("snapshot clear"),
        _ => None,
    };
    if let Some(Err(err)) = needs_root.map(commands::superuser::ensure_superuser) {
        eprintln!("rkt: {err}");
        return ExitCode::from(EXIT_RUNTIME_ERROR);
    }
    let result = match cli.command {
        Command::Fetch(args) => commands::fetch::run(&globals, args),
        Command::Trust(args) => commands::trust::run(&globals, args),
        Command::Image(command) => commands::image::run(&globals, command),
        Command::Run(args) => commands::run::run(&globals, *args),
        Command::Prepare(args) => commands::prepare::run(&globals, *args),
        Command::RunPrepared(args) => commands::run_prepared::run(&globals, args),
        Command::List(args) => commands::list::run(&globals, args),
        Command::Status(args) => commands::status::run(&globals, args),
        Command::CatManifest(args) => commands::cat_manifest::run(&globals, args),
        Command::Rm(args) => commands::rm::run(&globals, args),
        Command::Gc(args) => commands::gc::run(&globals, args),
        Command::Stop(args) => commands::stop::run(&globals, args),
        Command::Enter(args) => commands::enter::run(&globals, args),
        Command::Version => commands::version::run(),
        Command::Config(args) => commands::config::run(&globals, args),
        Command::Snapshot(command) => commands::snapshot::run(&globals, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::RktError::Usage(message)) => {
            eprintln!("rkt: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(err) => {
            // Errors quote names, labels, paths and entries from images:
            // one line, nothing a terminal would act on.
            eprintln!("rkt: {}", terminal::escape(&err.to_string()));
            ExitCode::from(EXIT_RUNTIME_ERROR)
        }
    }
}
