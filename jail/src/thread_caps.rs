//! Capabilities: the calling thread's sets, and the bounding set. Both are per thread in
//! Linux; a thread created afterwards inherits its creator's, which is how the bounding set
//! reduced once on the main thread before any other thread exists covers the whole process.

use caps::{CapSet, Capability, CapsHashSet};

/// Changing capabilities failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CapsError {
    what: String,
    source: caps::errors::CapsError,
}

/// Leaves the calling thread exactly `keep` as its permitted and effective sets, nothing
/// inheritable or ambient (so nothing survives an execve, which seccomp forbids anyway).
pub fn limit_thread(keep: &CapsHashSet) -> Result<(), CapsError> {
    caps::clear(None, CapSet::Ambient).map_err(err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("clearing the inheritable set"))?;
    // Effective must stay a subset of permitted at every step: shrink effective first.
    caps::set(None, CapSet::Effective, keep).map_err(err("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, keep).map_err(err("setting the permitted set"))?;
    Ok(())
}

/// Drops every capability but `keep` from the calling thread's bounding set (and so from every
/// thread it creates afterwards).
pub fn limit_bounding_set(keep: &CapsHashSet) -> Result<(), CapsError> {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(err(format!("dropping {cap} from the bounding set")))?;
        }
    }
    Ok(())
}

/// `set` as a sorted list of capability names, for `--debug` ("none" when empty).
pub fn describe(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(Capability::to_string).collect();
    names.sort();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(",")
    }
}

/// `set` as the bit mask /proc/<pid>/status prints (CapEff: etc.).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |mask, cap| mask | cap.bitmask())
}

fn err<W: Into<String>>(what: W) -> impl FnOnce(caps::errors::CapsError) -> CapsError {
    let what = what.into();
    move |source| CapsError { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_exactly_what_it_is_given() {
        let keep: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_FOWNER]
            .into_iter()
            .collect();
        let (effective, permitted, bounding) = std::thread::spawn(move || {
            limit_bounding_set(&keep).unwrap();
            limit_thread(&keep).unwrap();
            (
                caps::read(None, CapSet::Effective).unwrap(),
                caps::read(None, CapSet::Permitted).unwrap(),
                caps::read(None, CapSet::Bounding).unwrap(),
            )
        })
        .join()
        .unwrap();
        let expected: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_FOWNER]
            .into_iter()
            .collect();
        assert_eq!(effective, expected);
        assert_eq!(permitted, expected);
        assert_eq!(bounding, expected);
        // The test's own thread is untouched.
        assert!(caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap());
    }

    #[test]
    fn masks_and_names_match_proc() {
        let set: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_SETUID]
            .into_iter()
            .collect();
        assert_eq!(mask(&set), (1 << 0) | (1 << 7));
        assert_eq!(describe(&set), "CAP_CHOWN,CAP_SETUID");
        assert_eq!(describe(&CapsHashSet::new()), "none");
    }
}
