//! The kvm stage1's entrypoints in one binary; the stage1 image links `init`, `gc`, `enter_kvm`
//! and `stop_kvm` to it, and the name it is called by picks the entrypoint (see
//! `stage1_kvm::entrypoint`). Errors are one `stage1-kvm: ...` line and exit 254.

use std::process::ExitCode;

use stage1_kvm::args::{self, EnterArgs, GcArgs, RunArgs, StopArgs};
use stage1_kvm::entrypoint::{self, Entrypoint};
use stage1_kvm::{control, gc, run, Stage1Error, EXIT_STAGE1_ERROR};

fn main() -> ExitCode {
    // Lossy: a non-UTF-8 word then fails the argument checks with a message, never a panic.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The stage1 execs itself as the jailed VMM (not an entrypoint of rkt's interface).
    if argv.get(1).map(String::as_str) == Some(stage1_kvm::vmm_process::CHILD_ARG) {
        return ExitCode::from(u8::try_from(stage1_kvm::vmm_process::child::main()).unwrap_or(1));
    }
    let result = entrypoint::select(&argv)
        .map_err(Stage1Error::Usage)
        .and_then(|(entrypoint, skip)| dispatch(entrypoint, &argv[skip..]));
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(err) => {
            eprintln!("stage1-kvm: {err}");
            ExitCode::from(EXIT_STAGE1_ERROR as u8)
        }
    }
}

fn dispatch(entrypoint: Entrypoint, words: &[String]) -> Result<i32, Stage1Error> {
    match entrypoint {
        Entrypoint::Run => run::run(&args::parse::<RunArgs>(words)?),
        Entrypoint::Gc => gc::gc(&args::parse::<GcArgs>(words)?).map(|()| 0),
        Entrypoint::Enter => control::enter::enter(&args::parse::<EnterArgs>(words)?),
        Entrypoint::Stop => control::stop::stop(&args::parse::<StopArgs>(words)?),
    }
}
