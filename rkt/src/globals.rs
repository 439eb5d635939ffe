//! Options every command sees (rkt's persistent flags).

use std::path::{Path, PathBuf};

pub struct GlobalOptions {
    pub dir: PathBuf,
    pub local_config: PathBuf,
    pub system_config: PathBuf,
    /// `--user-config` (rkt's default: none).
    pub user_config: Option<PathBuf>,
    pub insecure: InsecureOptions,
    #[allow(dead_code)] // read by commands that print debug output (run, later)
    pub debug: bool,
}

impl GlobalOptions {
    /// The configuration directories in rkt's order of precedence, lowest first: system,
    /// local, then the user's if given.
    pub fn config_dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.system_config.as_path(), self.local_config.as_path()];
        dirs.extend(self.user_config.as_deref());
        dirs
    }
}

/// Security checks the user chose to skip (`--insecure-options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsecureOptions {
    /// Skip image signature verification.
    pub image: bool,
    pub tls: bool,
    pub ondisk: bool,
    pub http: bool,
    pub pubkey: bool,
    pub capabilities: bool,
    pub paths: bool,
    pub seccomp: bool,
}

impl InsecureOptions {
    /// Parses rkt's comma-separated list; used as clap's value parser.
    pub fn parse(text: &str) -> Result<InsecureOptions, String> {
        let mut options = InsecureOptions::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "none" => {}
                "image" => options.image = true,
                "tls" => options.tls = true,
                "ondisk" => options.ondisk = true,
                "http" => options.http = true,
                "pubkey" => options.pubkey = true,
                "capabilities" => options.capabilities = true,
                "paths" => options.paths = true,
                "seccomp" => options.seccomp = true,
                "all-fetch" => {
                    options.image = true;
                    options.tls = true;
                    options.http = true;
                }
                "all-run" => {
                    options.capabilities = true;
                    options.paths = true;
                    options.seccomp = true;
                }
                "all" => {
                    options = InsecureOptions {
                        image: true,
                        tls: true,
                        ondisk: true,
                        http: true,
                        pubkey: true,
                        capabilities: true,
                        paths: true,
                        seccomp: true,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown insecure option {other:?}; use none, image, tls, ondisk, http, \
                         pubkey, capabilities, paths, seccomp, all-fetch, all-run or all"
                    ))
                }
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_and_refuses_unknown_words() {
        let fetch = InsecureOptions::parse("all-fetch").unwrap();
        assert!(fetch.image && fetch.tls && fetch.http && !fetch.paths);
        let some = InsecureOptions::parse("image,seccomp").unwrap();
        assert!(some.image && some.seccomp && !some.tls);
        assert_eq!(
            InsecureOptions::parse("none").unwrap(),
            InsecureOptions::default()
        );
        assert!(InsecureOptions::parse("all").unwrap().ondisk);
        assert!(InsecureOptions::parse("image,bogus")
            .unwrap_err()
            .contains("bogus"));
    }
}
