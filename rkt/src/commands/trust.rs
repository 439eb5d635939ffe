//! `rkt trust [--prefix=NAME | --root] KEYFILE...`: trust keys for signed images.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::trust::{KeyInfo, Keystore};

#[derive(Args)]
pub struct TrustArgs {
    /// Image name prefix the keys may sign (e.g. example.com/app).
    #[arg(long, value_name = "NAME", conflicts_with = "root")]
    prefix: Option<String>,
    /// Trust the keys for every image.
    #[arg(long)]
    root: bool,
    /// Do not ask for confirmation of each key's fingerprint.
    #[arg(long)]
    skip_fingerprint_review: bool,
    /// Armored public key files.
    #[arg(value_name = "PUBKEY")]
    keys: Vec<PathBuf>,
}

pub fn run(globals: &GlobalOptions, args: TrustArgs) -> Result<(), RktError> {
    if args.prefix.is_none() && !args.root {
        return Err(RktError::Message(
            "say which images the key may sign: --prefix=NAME, or --root for all images"
                .to_string(),
        ));
    }
    if args.keys.is_empty() {
        return Err(RktError::Message(
            "no key files given, and fetching keys by discovery is not supported yet; \
             pass the armored public key file(s)"
                .to_string(),
        ));
    }
    let keystore = Keystore::new(&globals.local_config, &globals.system_config);
    let scope = match &args.prefix {
        Some(prefix) => format!("prefix {prefix:?}"),
        None => "all images (root key)".to_string(),
    };
    for key_path in &args.keys {
        let shown = key_path.display().to_string();
        let bytes = std::fs::read(key_path).map_err(RktError::io(format!("reading {shown}")))?;
        if !args.skip_fingerprint_review {
            let info = crate::trust::keystore::describe(&bytes, &shown)?;
            if !confirm(&info, &scope, &shown)? {
                return Err(RktError::Message(format!("not trusting {shown}")));
            }
        }
        let (info, path) = keystore.add(args.prefix.as_deref(), &bytes, &shown)?;
        eprintln!(
            "Trusting {shown} (fingerprint {}) for {scope}; added at {}",
            info.fingerprint,
            path.display()
        );
    }
    Ok(())
}

/// Shows the key and asks on stdin, as rkt did.
fn confirm(info: &KeyInfo, scope: &str, shown: &str) -> Result<bool, RktError> {
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "Prefix/scope: {scope}\nKey: {shown}");
    let _ = writeln!(
        stderr,
        "GPG key fingerprint is: {}",
        info.fingerprint.to_uppercase()
    );
    for subkey in &info.subkey_fingerprints {
        let _ = writeln!(stderr, "\tSubkey fingerprint: {}", subkey.to_uppercase());
    }
    for user in &info.user_ids {
        let _ = writeln!(stderr, "\t{user}");
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = write!(stderr, "Are you sure you want to trust this key (yes/no)? ");
        let _ = stderr.flush();
    }
    let mut answer = String::new();
    let read = stdin
        .lock()
        .read_line(&mut answer)
        .map_err(RktError::io("reading the answer"))?;
    if read == 0 {
        return Err(RktError::Message(
            "no answer on stdin to confirm the key; answer yes, or pass --skip-fingerprint-review"
                .to_string(),
        ));
    }
    Ok(matches!(answer.trim(), "yes" | "y"))
}
