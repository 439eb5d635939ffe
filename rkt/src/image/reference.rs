//! Docker image references (`[REGISTRY/]REPO[:TAG][@DIGEST]`), checked
//! against the Docker reference grammar (the distribution project's) before a
//! name, tag or digest becomes an image name, a label, a URL path or a store
//! key. A reference arrives from the command line (`docker://`) or from
//! inside an image (a docker-archive's `RepoTags`, an OCI layout's
//! `org.opencontainers.image.ref.name`), so nothing here trusts its input:
//! what the grammar refuses is refused.
//!
//! The grammar is matched with the `regex-lite` crate. It is written out here
//! rather than taken from `oci-spec` (which rkt used until 2026-12-07, and
//! which the tests still compare against) because of what compiling it costs:
//! oci-spec's spells the tag `[\w][\w.-]{0,127}` with Unicode's `\w`, a
//! 128-fold repetition of a large class, and compiling that took 58 ms
//! natively and about half a second in the emulated test host on every `rkt
//! run` that named an image, which is most of stage0's time. Here the tag's
//! word class is ASCII (as in Go's regexp, where the grammar comes from; all
//! of regex-lite's classes are) and unbounded, and [`check_tag`] bounds its
//! length. With the `regex` crate that still took 0.2 ms natively and 21 ms
//! in the emulated host; regex-lite, which builds no automaton up front, 4 ms
//! (its slower matching costs nothing on strings this short).

use std::sync::OnceLock;

use regex_lite::Regex;
use thiserror::Error;

use crate::terminal::escape;

/// Docker Hub's registry, where references without one live.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// What `oci-spec` calls Docker Hub, and what Docker itself writes in the
/// names it shows (`docker.io/library/nginx:latest`): the store's names use it.
pub const DOCKER_HUB_NAME: &str = "docker.io";
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

/// The distribution project's reference grammar (`reference/regexp.go`),
/// anchored, with three groups: the name, the tag and the digest. Only the
/// tag's repetition differs (see the module's comment).
const REFERENCE_GRAMMAR: &str = concat!(
    // name: [domain/]component(/component)*
    r"^((?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])",
    r"(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?/)?",
    r"[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?",
    r"(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)",
    // :tag
    r"(?::(\w[\w.-]*))?",
    // @algorithm:hex
    r"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}))?$",
);

/// The distribution project's limit on a repository name.
const NAME_MAX: usize = 255;

/// Longer than any reference the grammar and the limits can accept (a registry of up to 253
/// characters and a port, a repository of `NAME_MAX`, a 128-character tag, a sha512 digest):
/// refused before it is matched. References come from inside images too (a docker-archive's
/// `RepoTags`), and matching costs time in proportion to the length.
const REFERENCE_MAX: usize = 1024;

fn grammar() -> &'static Regex {
    static GRAMMAR: OnceLock<Regex> = OnceLock::new();
    // The pattern is a constant that a unit test compiles; it cannot fail here.
    GRAMMAR.get_or_init(|| Regex::new(REFERENCE_GRAMMAR).expect("the reference grammar compiles"))
}

/// Splits a grammatical name into registry and repository as Docker does
/// (distribution's `splitDockerDomain`): the first component is a registry
/// only when it has a dot or a port, or is `localhost`; else the name is on
/// Docker Hub, where one-component names live under `library/`.
fn split_registry(name: &str) -> (&str, String) {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    let registry = match registry {
        DOCKER_HUB_NAME | DOCKER_HUB_LEGACY => DOCKER_HUB,
        other => other,
    };
    // An official Hub image, also when named through the API host
    // (`registry-1.docker.io/nginx`), lives under `library/`.
    if registry == DOCKER_HUB && !repository.contains('/') {
        (registry, format!("library/{repository}"))
    } else {
        (registry, repository.to_string())
    }
}

/// Parses `spec` by the Docker reference grammar.
pub fn parse(spec: &str) -> Result<DockerReference, ReferenceError> {
    let refused = |problem: &str| ReferenceError::Reference {
        reference: spec.to_string(),
        problem: problem.to_string(),
    };
    if spec.is_empty() {
        return Err(refused("repository name must have at least one component"));
    }
    if spec.len() > REFERENCE_MAX {
        return Err(ReferenceError::Reference {
            reference: format!("{}...", spec.chars().take(64).collect::<String>()),
            problem: format!(
                "a reference of {} bytes is longer than any valid one ({REFERENCE_MAX} at most)",
                spec.len()
            ),
        });
    }
    let parts = grammar()
        .captures(spec)
        .ok_or_else(|| refused("invalid reference format"))?;
    let name = parts.get(1).map_or("", |m| m.as_str());
    let tag = parts.get(2).map(|m| m.as_str());
    let digest = parts.get(3).map(|m| m.as_str());
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (registry, repository) = split_registry(name);
    // The grammar lets a first component without a dot or port pass as a
    // domain (`UPPER/x`), which then belongs to the repository: Docker
    // refuses an uppercase repository, and so do we.
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(refused("repository name must be lowercase"));
    }
    if repository.len() > NAME_MAX {
        return Err(refused(
            "repository name must not be more than 255 characters",
        ));
    }
    if let Some(digest) = digest {
        let (hex, expected_len) = match digest.split_once(':') {
            Some(("sha256", hex)) => (hex, 64),
            Some(("sha384", hex)) => (hex, 96),
            Some(("sha512", hex)) => (hex, 128),
            _ => return Err(refused("unsupported digest algorithm")),
        };
        if hex.len() != expected_len {
            return Err(refused("invalid checksum digest length"));
        }
    }
    // Without a tag or digest, Docker means `latest`.
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    };
    Ok(DockerReference {
        registry: registry.to_string(),
        repository,
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
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

    /// oci-spec's parse, put the way ours reports it (the registry as rkt
    /// names Docker Hub, the length of the tag bounded as `check_tag` does).
    fn oci_spec_parse(spec: &str) -> Option<DockerReference> {
        let parsed = oci_spec::distribution::Reference::try_from(spec).ok()?;
        if parsed.tag().is_some_and(|tag| check_tag(tag).is_err())
            || parsed.repository().chars().any(|c| c.is_ascii_uppercase())
        {
            return None;
        }
        let registry = match parsed.registry() {
            DOCKER_HUB_NAME => DOCKER_HUB,
            other => other,
        };
        let repository = if registry == DOCKER_HUB && !parsed.repository().contains('/') {
            format!("library/{}", parsed.repository())
        } else {
            parsed.repository().to_string()
        };
        Some(DockerReference {
            registry: registry.to_string(),
            repository,
            tag: parsed.tag().map(str::to_string),
            digest: parsed.digest().map(str::to_string),
        })
    }

    #[test]
    fn an_overlong_reference_is_refused_before_it_is_matched() {
        let long = format!("{}:latest", "a".repeat(1 << 20));
        let started = std::time::Instant::now();
        let err = parse(&long).unwrap_err().to_string();
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        assert!(err.contains("longer than any valid one"), "{err}");
        assert!(err.len() < 400, "the message quotes only the start: {err}");
        // The longest valid shape still parses.
        let registry = format!("{}.example", "r".repeat(240));
        let valid = format!(
            "{registry}:5000/{}:{}@sha512:{}",
            "n".repeat(NAME_MAX),
            "t".repeat(128),
            "0".repeat(128)
        );
        assert!(valid.len() <= REFERENCE_MAX);
        assert!(parse(&valid).is_ok(), "{valid}");
    }

    #[test]
    fn the_grammar_compiles() {
        assert!(Regex::new(REFERENCE_GRAMMAR).is_ok());
    }

    /// Ours and oci-spec's (the distribution grammar) agree on what they
    /// accept and how they split it: on the cases above, on the
    /// distribution project's own examples, and on every string made from a
    /// small alphabet of the grammar's delimiters up to length 5 around real
    /// names.
    #[test]
    fn agrees_with_oci_spec() {
        let hex64 = "f".repeat(64);
        let mut cases: Vec<String> = [
            "busybox",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "lowercase:Uppercase",
            "Uppercase:tag",
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "xn--n3h.com/myimage:xn--n3h.com",
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "opensuse/leap:15.3",
            "localhost/a",
            "localhost:5000/a/b",
            "LOCALHOST/a",
            "a__b/c--d/e.f",
            "a___b",
            "a-/b",
            "-a",
            "a:",
            "a@",
            "a@sha256:",
            "a@md5:0123456789abcdef0123456789abcdef",
            "a@sha384:abc",
            "index.docker.io/x",
            "docker.io/x/y",
            "registry-1.docker.io/library/nginx:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cases.push(format!("test:5000/repo@sha256:{hex64}"));
        cases.push(format!("test:5000/repo:tag@sha256:{hex64}"));
        cases.push(format!("a@sha512:{}", "0".repeat(128)));
        cases.push(format!("a@sha512:{}", "0".repeat(127)));
        cases.push(format!("a:{}", "t".repeat(128)));
        cases.push(format!("a:{}", "t".repeat(129)));
        cases.push(format!("x/{}", "a".repeat(254)));
        cases.push(format!("x/{}", "a".repeat(260)));
        let alphabet = ["a", "B", "1", ".", "_", "-", ":", "/", "@", "é"];
        let mut words = vec![String::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for word in &words {
                for letter in alphabet {
                    longer.push(format!("{word}{letter}"));
                }
            }
            words = longer;
        }
        for word in &words {
            cases.push(word.clone());
            cases.push(format!("a{word}"));
            cases.push(format!("host.io/x{word}"));
        }
        for case in &cases {
            assert_eq!(parse(case).ok(), oci_spec_parse(case), "{case:?}");
        }
    }
}
