//! `rkt-mkstage1 --binary B --kernel K --initrd I -o OUT`: writes the kvm stage1 image
//! (`stage1-kvm.aci`), reproducibly. tools/setup runs it to install the image beside `rkt`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stage1_kvm::image::{write_image, ImageInputs};

#[derive(Parser)]
#[command(
    name = "rkt-mkstage1",
    about = "Write the kvm stage1 image (stage1-kvm.aci)"
)]
struct Cli {
    /// The stage1-kvm binary.
    #[arg(long)]
    binary: PathBuf,
    /// The guest kernel (vmlinux).
    #[arg(long)]
    kernel: PathBuf,
    /// The pod initramfs (guest-init alone).
    #[arg(long)]
    initrd: PathBuf,
    /// The image's version label.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// Where to write the image.
    #[arg(short, long)]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let inputs = ImageInputs {
        binary: cli.binary,
        kernel: cli.kernel,
        initrd: cli.initrd,
        version: cli.version,
    };
    match write_image(&inputs, &cli.output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rkt-mkstage1: {err}");
            ExitCode::from(1)
        }
    }
}
