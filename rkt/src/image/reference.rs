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

/// What `oci-spec` calls Docker Hub, and what Docker itself writes in the
/// names it shows (`docker.io/library/nginx:latest`): the store's names use it.
pub const DOCKER_HUB_NAME: &str = "docker.io";
const OCI_SPEC_HUB: &str = DOCKER_HUB_NAME;
/// Docker Hub's legacy index name, which Docker also reads as `docker.io`.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

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

impl DockerReference {
    /// The registry as Docker names it in references: Docker Hub is
    /// `docker.io` (its API lives at `registry-1.docker.io`).
    pub fn domain(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB | DOCKER_HUB_LEGACY => DOCKER_HUB_NAME,
            other => other,
        }
    }

    /// `DOMAIN/REPOSITORY`, Docker's full repository name
    /// (`docker.io/library/nginx`).
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.domain(), self.repository)
    }

    /// The full name the store keeps for an image fetched or loaded under
    /// this reference, as Docker spells it: `docker.io/library/nginx:latest`,
    /// `127.0.0.1:5000/app:1.0`, `quay.io/x/y@sha256:...`. A digest pins
    /// the image, so a tag given with it is dropped (Docker pulls by the
    /// digest alone then). Built only from parts the grammar accepted.
    pub fn canonical(&self) -> String {
        let repository = self.repository_name();
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{repository}@{digest}"),
            (None, Some(tag)) => format!("{repository}:{tag}"),
            (None, None) => format!("{repository}:latest"),
        }
    }

    /// The repository's last path element (`nginx` for
    /// `docker.io/library/nginx:1.25`): what rkt's docker2aci image names
    /// ended in, and so where a pod's default app name comes from.
    pub fn base_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

/// The store's name for `spec` (see [`DockerReference::canonical`]), if
/// `spec` is a Docker reference: `debian-nginx:bookworm` is
/// `docker.io/library/debian-nginx:bookworm`.
pub fn canonical_name(spec: &str) -> Result<String, ReferenceError> {
    parse(spec).map(|parsed| parsed.canonical())
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
    // An official Hub image named through the API host
    // (`registry-1.docker.io/nginx`) lives under `library/` there too.
    let repository = if registry == DOCKER_HUB && !parsed.repository().contains('/') {
        format!("library/{}", parsed.repository())
    } else {
        parsed.repository().to_string()
    };
    Ok(DockerReference {
        registry: registry.to_string(),
        repository,
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
    fn canonical_names_are_dockers() {
        for (spec, name, base) in [
            ("nginx", "docker.io/library/nginx:latest", "nginx"),
            ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx"),
            ("someone/tool", "docker.io/someone/tool:latest", "tool"),
            (
                "docker.io/library/nginx:1.25",
                "docker.io/library/nginx:1.25",
                "nginx",
            ),
            (
                "index.docker.io/nginx",
                "docker.io/library/nginx:latest",
                "nginx",
            ),
            (
                "registry-1.docker.io/nginx:2",
                "docker.io/library/nginx:2",
                "nginx",
            ),
            (
                "registry-1.docker.io/library/nginx",
                "docker.io/library/nginx:latest",
                "nginx",
            ),
            (
                "127.0.0.1:5000/debian-nginx:bookworm",
                "127.0.0.1:5000/debian-nginx:bookworm",
                "debian-nginx",
            ),
            ("localhost/a/b/c:1", "localhost/a/b/c:1", "c"),
        ] {
            let parsed = parse(spec).unwrap();
            assert_eq!(parsed.canonical(), name, "{spec}");
            assert_eq!(parsed.base_name(), base, "{spec}");
            assert_eq!(
                canonical_name(name).unwrap(),
                name,
                "{name} is a fixed point"
            );
        }
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            canonical_name(&format!("quay.io/x/y:1@{digest}")).unwrap(),
            format!("quay.io/x/y@{digest}")
        );
        assert!(canonical_name("Not_Valid").is_err());
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
