//! rkt-mkinitramfs: writes the guest initramfs (uncompressed cpio newc).
//!
//! `rkt-mkinitramfs --init PATH [--add SRC:DEST]... [--dir DEST]... [--busybox-links] -o OUT`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use initramfs::{InitramfsBuilder, InitramfsError};

#[derive(Debug, Parser)]
#[command(
    name = "rkt-mkinitramfs",
    about = "Write the guest's initramfs: guest-init as /init, the standard directories, \
             /dev/console and /dev/null, and any extra files"
)]
struct Cli {
    /// The guest-init binary (static), stored as /init with mode 0755.
    #[arg(long, value_name = "PATH")]
    init: PathBuf,

    /// A host file SRC stored at the absolute path DEST, keeping its permissions. Repeatable.
    #[arg(long = "add", value_name = "SRC:DEST", value_parser = parse_add)]
    add: Vec<(PathBuf, String)>,

    /// An extra empty directory at the absolute path DEST (mode 0755). Repeatable.
    #[arg(long = "dir", value_name = "DEST")]
    dir: Vec<String>,

    /// For a busybox added with --add (DEST named `busybox`), a symlink per applet next to it
    /// (/bin/sh, /bin/echo, ...), from `busybox --list`.
    #[arg(long)]
    busybox_links: bool,

    /// Where to write the archive (replaced atomically).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
}

fn parse_add(value: &str) -> Result<(PathBuf, String), String> {
    match value.rsplit_once(':') {
        Some((source, dest)) if !source.is_empty() && !dest.is_empty() => {
            Ok((PathBuf::from(source), dest.to_string()))
        }
        _ => Err("expected SRC:DEST, for example /bin/busybox:/bin/busybox".into()),
    }
}

fn build(cli: &Cli) -> Result<(), InitramfsError> {
    let mut builder = InitramfsBuilder::new().init(&cli.init)?;
    for (source, dest) in &cli.add {
        builder = builder.add_host_file(source, dest)?;
    }
    for dest in &cli.dir {
        builder = builder.add_dir(dest, 0o755)?;
    }
    if cli.busybox_links {
        let busyboxes: Vec<&String> = cli
            .add
            .iter()
            .map(|(_, dest)| dest)
            .filter(|dest| dest.trim_end_matches('/').ends_with("/busybox"))
            .collect();
        if busyboxes.is_empty() {
            return Err(InitramfsError::BusyboxMissing {
                dest: "any --add destination".into(),
            });
        }
        for dest in busyboxes {
            builder = builder.add_busybox_links(dest)?;
        }
    }
    builder.write_to(&cli.output)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match build(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rkt-mkinitramfs: error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_splits_at_the_last_colon() {
        assert_eq!(
            parse_add("/opt/a:b/tool:/bin/tool"),
            Ok((PathBuf::from("/opt/a:b/tool"), "/bin/tool".to_string()))
        );
        assert!(parse_add("/bin/busybox").is_err());
        assert!(parse_add(":/bin/x").is_err());
        assert!(parse_add("/bin/x:").is_err());
    }
}
