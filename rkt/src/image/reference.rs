//! Docker image references (`[REGISTRY/]REPO[:TAG][@DIGEST]`), checked
//! against the Docker reference grammar (the distribution project's, as
//! implemented by `oci-spec`) before a name, tag or digest becomes an image
//! name, a label, a URL path or a store key. A reference arrives from the
//! command line (`docker://`) or from inside an image (a docker-archive's
//! `RepoTags`, an OCI layout's `org.opencontainers.image.ref.name`), so
//! nothing here trusts its input: what the grammar refuses is refused.

use oci_spec::distribution::Reference;
use thiserror::Error;

use crate::terminal::escape;

/// Docker Hub's registry, where references without one live.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// What `oci-spec` calls Docker Hub.
const OCI_SPEC_HUB: &str = "docker.io";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "{} is not a valid image reference ({problem}); use lowercase \
         [REGISTRY/]REPO[:TAG|@sha256:DIGEST]", escape(.reference)
    )]
    Reference { reference: String, problem: String },
    #[error(
        "{} is not a valid image tag; a tag is 1 to 128 of A-Z a-z 0-9 _ . - \
         and does not start with . or -", escape(.tag)
    )]
    Tag { tag: String },
}

/// A reference, split and normalized the way Docker does (`busybox` is
/// `registry-1.docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerReference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Parses `spec` by the Docker reference grammar.
pub fn parse(spec: &str) -> Result<DockerReference, ReferenceError> {
    let parsed = Reference::try_from(spec).map_err(|err| ReferenceError::Reference {
        reference: spec.to_string(),
        problem: err.to_string(),
    })?;
    // The grammar's tag is `[\w][\w.-]{0,127}`; `\w` is ASCII in Go's regexp
    // (where the grammar comes from) but Unicode in Rust's, so check again.
    if let Some(tag) = parsed.tag() {
        check_tag(tag)?;
    }
    // The grammar lets a first component without a dot or port pass as a
    // domain (`UPPER/x`), which then belongs to the repository: Docker
    // refuses an uppercase repository, and so do we.
    if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::Reference {
            reference: spec.to_string(),
            problem: "repository name must be lowercase".to_string(),
        });
    }
    let registry = match parsed.registry() {
        OCI_SPEC_HUB => DOCKER_HUB,
        other => other,
    };
    Ok(DockerReference {
        registry: registry.to_string(),
        repository: parsed.repository().to_string(),
        tag: parsed.tag().map(str::to_string),
        digest: parsed.digest().map(str::to_string),
    })
}

/// Checks a tag by the grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(word);
    if first_ok && tag.len() <= 128 && chars.all(|c| word(c) || c == '.' || c == '-') {
        Ok(())
    } else {
        Err(ReferenceError::Tag {
            tag: tag.to_string(),
        })
    }
}

/// Checks a repository name as found in an image (`[REGISTRY/]REPO`, no tag
/// or digest).
pub fn check_repository(repository: &str) -> Result<(), ReferenceError> {
    let parsed = parse(repository)?;
    if parsed.digest.is_some() || !repository_ends_without_tag(repository) {
        return Err(ReferenceError::Reference {
            reference: repository.to_string(),
            problem: "a repository name carries no tag or digest".to_string(),
        });
    }
    Ok(())
}

/// True when the last path component of `repository` has no `:TAG`.
fn repository_ends_without_tag(repository: &str) -> bool {
    let last = repository.rsplit('/').next().unwrap_or(repository);
    !last.contains(':')
}

/// Checks what an OCI layout's `org.opencontainers.image.ref.name` may hold:
/// a tag, or (as some tools write) a whole reference.
pub fn check_ref_name(name: &str) -> Result<(), ReferenceError> {
    check_tag(name).or_else(|tag_err| parse(name).map(|_| ()).map_err(|_| tag_err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_docker() {
        let hub = parse("busybox").unwrap();
        assert_eq!(hub.registry, DOCKER_HUB);
        assert_eq!(hub.repository, "library/busybox");
        assert_eq!(hub.tag.as_deref(), Some("latest"));
        let local = parse("127.0.0.1:5000/test/busybox:1.0").unwrap();
        assert_eq!(local.registry, "127.0.0.1:5000");
        assert_eq!(local.repository, "test/busybox");
        assert_eq!(local.tag.as_deref(), Some("1.0"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert_eq!(pinned.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(pinned.tag, None);
    }

    #[test]
    fn refuses_what_the_grammar_refuses() {
        for bad in [
            "",
            "Busybox",
            "UPPER/case",
            "a/../b",
            "a/./b",
            "a//b",
            "../../etc",
            "a:tag/with/slash",
            "a:\u{1b}[2J",
            "a:tag\nforged",
            "a:-leading-dash",
            "a:é",
            "a@sha256:short",
            "a b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(parse(&long_tag).is_err());
    }

    #[test]
    fn tags_repositories_and_ref_names() {
        assert!(check_tag("v1.2.3_rc-1").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a:b", "..", "x\u{7f}"] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        assert!(check_repository("registry:5000/team/app").is_ok());
        assert!(check_repository("team/app:1").is_err());
        assert!(check_repository("team/../app").is_err());
        assert!(check_ref_name("latest").is_ok());
        assert!(check_ref_name("localhost/app:1.0").is_ok());
        let err = check_ref_name("x\u{1b}]0;owned\u{7}").unwrap_err();
        let shown = err.to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\x1b"), "{shown}");
    }
}
