//! The stage1 image holds one binary and names its entrypoints with symlinks to it (rkt's
//! names: `init`, `enter_kvm`, `stop_kvm`, `gc`); stage0 execs the symlink, so the name in
//! argv[0] says which entrypoint is meant. Called by its own name (`stage1-kvm`), the binary
//! takes the entrypoint as its first argument instead (for people and tests).

use std::path::Path;

/// The binary's own file name in the stage1 rootfs.
pub const BINARY_NAME: &str = "stage1-kvm";

/// One of the stage1 interface's entrypoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entrypoint {
    Run,
    Enter,
    Stop,
    Gc,
}

impl Entrypoint {
    /// Every entrypoint, in the order the image lists them.
    pub const ALL: [Entrypoint; 4] = [
        Entrypoint::Run,
        Entrypoint::Enter,
        Entrypoint::Stop,
        Entrypoint::Gc,
    ];

    /// The symlink's name in the stage1 rootfs (what the annotation points at, without `/`).
    pub fn file_name(self) -> &'static str {
        match self {
            Entrypoint::Run => "init",
            Entrypoint::Enter => "enter_kvm",
            Entrypoint::Stop => "stop_kvm",
            Entrypoint::Gc => "gc",
        }
    }

    /// The stage1 manifest annotation naming it.
    pub fn annotation(self) -> &'static str {
        match self {
            Entrypoint::Run => "coreos.com/rkt/stage1/run",
            Entrypoint::Enter => "coreos.com/rkt/stage1/enter",
            Entrypoint::Stop => "coreos.com/rkt/stage1/stop",
            Entrypoint::Gc => "coreos.com/rkt/stage1/gc",
        }
    }

    /// The entrypoint a name stands for: a symlink's name, or the plain words `run`, `enter`,
    /// `stop`, `gc` (the binary's first argument when called by its own name).
    pub fn from_name(name: &str) -> Option<Entrypoint> {
        match name {
            "init" | "run" => Some(Entrypoint::Run),
            "enter_kvm" | "enter" => Some(Entrypoint::Enter),
            "stop_kvm" | "stop" => Some(Entrypoint::Stop),
            "gc" => Some(Entrypoint::Gc),
            _ => None,
        }
    }
}

/// Decides the entrypoint from argv: by argv[0]'s file name, else (argv[0] is the binary's own
/// name) by argv[1]. Returns it and how many leading words to drop before its arguments.
pub fn select(argv: &[String]) -> Result<(Entrypoint, usize), String> {
    let called_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or(BINARY_NAME);
    if let Some(entrypoint) = Entrypoint::from_name(called_as) {
        return Ok((entrypoint, 1));
    }
    match argv.get(1).map(String::as_str) {
        Some(word) => Entrypoint::from_name(word)
            .map(|e| (e, 2))
            .ok_or_else(|| format!("unknown entrypoint {word:?}: use run, enter, stop or gc")),
        None => Err(format!(
            "called as {called_as:?} without an entrypoint: rkt execs it as init, gc, ...; \
             by hand use `{BINARY_NAME} run|gc ARGS`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_symlink_name_picks_the_entrypoint() {
        let pod = "/var/lib/rkt/pods/run/u/stage1/rootfs";
        assert_eq!(
            select(&argv(&[&format!("{pod}/init"), "--net=default", "u"])),
            Ok((Entrypoint::Run, 1))
        );
        assert_eq!(
            select(&argv(&[&format!("{pod}/gc"), "u"])),
            Ok((Entrypoint::Gc, 1))
        );
        assert_eq!(
            select(&argv(&["stop_kvm", "--force"])),
            Ok((Entrypoint::Stop, 1))
        );
    }

    #[test]
    fn by_its_own_name_the_first_argument_picks() {
        assert_eq!(
            select(&argv(&["/usr/bin/stage1-kvm", "gc", "u"])),
            Ok((Entrypoint::Gc, 2))
        );
        assert!(select(&argv(&["stage1-kvm", "fly"]))
            .unwrap_err()
            .contains("\"fly\""));
        assert!(select(&argv(&["stage1-kvm"])).is_err());
        assert!(select(&[]).is_err());
    }

    #[test]
    fn names_round_trip() {
        for e in Entrypoint::ALL {
            assert_eq!(Entrypoint::from_name(e.file_name()), Some(e));
            assert!(e.annotation().starts_with("coreos.com/rkt/stage1/"));
        }
    }
}
