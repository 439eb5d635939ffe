//! `rkt trust [--prefix=NAME | --root] [PUBKEY...]`: trust keys for signed
//! images. PUBKEY is a file or URL; with `--prefix` and no PUBKEY the keys are
//! found by appc discovery (`ac-discovery-pubkeys`).

use clap::Args;
use std::io::{BufRead, IsTerminal, Write};

use crate::error::RktError;
use crate::fetch::auth::HostAuth;
use crate::fetch::discovery::discover_pubkeys;
use crate::fetch::http::Http;
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
    /// Allow fetching keys (and discovering them) over plain HTTP.
    #[arg(long)]
    insecure_allow_http: bool,
    /// Armored public key files or http(s) URLs; with --prefix and none given,
    /// the keys the prefix's owner publishes (ac-discovery-pubkeys).
    #[arg(value_name = "PUBKEY")]
    keys: Vec<String>,
}

/// Keys are small.
const MAX_KEY_BYTES: u64 = 1024 * 1024;

pub fn run(globals: &GlobalOptions, args: TrustArgs) -> Result<(), RktError> {
    if args.prefix.is_none() && !args.root {
        return Err(RktError::Message(
            "say which images the key may sign: --prefix=NAME, or --root for all images"
                .to_string(),
        ));
    }
    let http = Http::new(globals.insecure.tls)?
        .with_host_auth(HostAuth::load_from(&globals.config_dirs())?);
    let mut keys = args.keys.clone();
    if keys.is_empty() {
        let Some(prefix) = &args.prefix else {
            return Err(RktError::Message(
                "--root needs the key file(s) to trust".to_string(),
            ));
        };
        let scheme = if args.insecure_allow_http {
            "http"
        } else {
            "https"
        };
        keys = discover_pubkeys(prefix, scheme, |url| match http.get(url, &[]) {
            Ok(response) if response.status().as_u16() == 200 => {
                Http::read_small(response, url, MAX_KEY_BYTES)
                    .ok()
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        });
        if keys.is_empty() {
            return Err(RktError::Message(format!(
                "no keys found for prefix {prefix} by discovery (ac-discovery-pubkeys); \
                 pass the key file or URL"
            )));
        }
    }
    let keystore = Keystore::new(&globals.local_config, &globals.system_config);
    let scope = match &args.prefix {
        Some(prefix) => format!("prefix {prefix:?}"),
        None => "all images (root key)".to_string(),
    };
    for key in &keys {
        let shown = key.clone();
        let bytes = read_key(&http, key, args.insecure_allow_http)?;
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

/// Reads a key from a file or an http(s) URL (plain http only when allowed).
fn read_key(http: &Http, key: &str, allow_http: bool) -> Result<Vec<u8>, RktError> {
    if key.starts_with("http://") && !allow_http {
        return Err(RktError::Message(format!(
            "{key}: refusing to fetch a key over plain HTTP; use https, or --insecure-allow-http"
        )));
    }
    if key.starts_with("http://") || key.starts_with("https://") {
        let response = http.get(key, &[])?;
        if response.status().as_u16() != 200 {
            return Err(RktError::Message(format!(
                "{key}: the server answered HTTP {}",
                response.status().as_u16()
            )));
        }
        return Http::read_small(response, key, MAX_KEY_BYTES);
    }
    std::fs::read(key).map_err(RktError::io(format!("reading {key}")))
}
