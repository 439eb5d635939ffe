//! The names a Docker/OCI image is stored under (schema 4's `image_names`),
//! and the close matches offered when a name is not in the store.
//!
//! One image may carry several names, one per transport and tag it was
//! fetched under, and a name names one image (fetched again, it moves, as a
//! Docker tag does):
//! - a registry (`docker://REF`) or an image that says where it is from (a
//!   docker-archive's `RepoTags`, an OCI `ref.name` that is a whole
//!   reference): the reference as Docker spells it in full,
//!   `docker.io/library/nginx:1.25`, `127.0.0.1:5000/app@sha256:...`;
//! - a layout or archive that names no repository: the transport and the
//!   absolute path it was read from, plus the tag if it has one,
//!   `oci:/srv/images/nginx:bookworm`, exactly what fetches it again.
//!
//! Every Docker name is built from a reference the Docker grammar accepted
//! (`reference::parse`); none is ever used as a path. A transport name holds
//! the user's own path, and is only compared and printed (escaped), never
//! opened. ACIs keep appc's names (manifest name and labels) and get none
//! here.

use appc::ImageManifest;

use super::reference::{self, canonical_name, check_tag};

/// The names an image read from a local archive or layout gets. `source` is
/// the transport and absolute path (`oci:/abs/path`); `references` the whole
/// references the image carries (already checked by the grammar); `tag` an
/// OCI `ref.name` that is only a tag.
pub fn local(source: &str, references: &[String], tag: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in references.iter().filter_map(|r| canonical_name(r).ok()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push(transport_name(source, tag));
    }
    names
}

/// `oci:/abs/path:tag`, or `oci:/abs/path` without a tag.
pub fn transport_name(source: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{source}:{tag}"),
        None => source.to_string(),
    }
}

/// The names an image stored before schema 4 gets: what a fetch from its
/// recorded source would give it now, from the provenance its appc manifest
/// recorded (`appc.io/docker/repository` and `/tag`).
pub fn backfill(source: &str, manifest: &ImageManifest) -> Vec<String> {
    if let Some(spec) = source.strip_prefix("docker://") {
        return canonical_name(spec).ok().into_iter().collect();
    }
    let tag = manifest.annotation("appc.io/docker/tag");
    match manifest.annotation("appc.io/docker/repository") {
        Some(repository) => {
            let reference = match tag {
                Some(tag) => format!("{repository}:{tag}"),
                None => repository.to_string(),
            };
            local(source, &[reference], None)
        }
        // An OCI layout's ref.name: a tag, or (as some tools write it) a
        // whole reference.
        None => match tag {
            Some(tag) if check_tag(tag).is_err() => local(source, &[tag.to_string()], None),
            tag => local(source, &[], tag),
        },
    }
}

/// What a typed name is compared by: the repository's last path element
/// (`debian-nginx` for `debian-nginx:bookworm`, for
/// `docker.io/library/debian-nginx:bookworm`, and for an ACI's
/// `example.com/debian-nginx:1`), lowercase.
fn base_of(name: &str) -> String {
    // A transport name: the layout's or archive's last path element.
    let name = ["oci:", "oci-archive:", "docker-archive:", "docker://"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    if let Ok(parsed) = reference::parse(name) {
        return parsed.base_name().to_string();
    }
    let without_digest = name.split('@').next().unwrap_or(name);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':')
        .next()
        .unwrap_or(last)
        .trim_end_matches(".tar")
        .to_ascii_lowercase()
}

/// Most close matches offered in one error.
const MAX_SUGGESTIONS: usize = 5;

/// The names in `candidates` close to `query`, best first: the same
/// repository under another tag or registry, then one whose repository
/// holds the typed one (or the other way round), then a typo away. At
/// most `MAX_SUGGESTIONS`.
pub fn close_matches<'a>(
    query: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let wanted = base_of(query);
    if wanted.is_empty() {
        return Vec::new();
    }
    // Typos: one edit for short names, more for longer ones. Optimal string alignment:
    // insertions, deletions, substitutions and swaps of two neighbours (the usual typos)
    // each count one.
    let tolerance = (wanted.chars().count() / 4).max(1);
    let mut scored: Vec<(usize, &str)> = Vec::new();
    for candidate in candidates {
        if candidate == query {
            continue;
        }
        let base = base_of(candidate);
        let score = if base == wanted {
            0
        } else if wanted.len() >= 3 && (base.contains(&wanted) || wanted.contains(&base)) {
            1
        } else if strsim::osa_distance(&base, &wanted) <= tolerance {
            2
        } else {
            continue;
        };
        if !scored.iter().any(|(_, name)| *name == candidate) {
            scored.push((score, candidate));
        }
    }
    scored.sort();
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, name)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(annotations: &[(&str, &str)]) -> ImageManifest {
        let annotations: Vec<serde_json::Value> = annotations
            .iter()
            .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
            .collect();
        let json = serde_json::json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "x",
            "annotations": annotations,
        });
        ImageManifest::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn local_images_are_named_by_their_references_else_by_transport() {
        assert_eq!(
            local(
                "docker-archive:/a.tar",
                &[
                    "debian-nginx:bookworm".to_string(),
                    "debian-nginx:bookworm".to_string()
                ],
                None
            ),
            vec!["docker.io/library/debian-nginx:bookworm"]
        );
        assert_eq!(
            local("oci:/srv/oci", &[], Some("bookworm-nginx")),
            vec!["oci:/srv/oci:bookworm-nginx"]
        );
        assert_eq!(local("oci:/srv/oci", &[], None), vec!["oci:/srv/oci"]);
    }

    #[test]
    fn stored_images_get_the_names_a_fetch_would_give_them() {
        assert_eq!(
            backfill("docker://busybox", &manifest(&[])),
            vec!["docker.io/library/busybox:latest"]
        );
        let saved = manifest(&[
            ("appc.io/docker/repository", "example.com/busybox-docker"),
            ("appc.io/docker/tag", "1.0"),
        ]);
        assert_eq!(
            backfill("docker-archive:/w/saved.tar", &saved),
            vec!["example.com/busybox-docker:1.0"]
        );
        let layout = manifest(&[("appc.io/docker/tag", "1.0")]);
        assert_eq!(
            backfill("oci:/w/busybox-oci", &layout),
            vec!["oci:/w/busybox-oci:1.0"]
        );
        let whole = manifest(&[("appc.io/docker/tag", "localhost/app:2")]);
        assert_eq!(backfill("oci:/w/l", &whole), vec!["localhost/app:2"]);
        assert_eq!(
            backfill("oci-archive:/w/l.tar", &manifest(&[])),
            vec!["oci-archive:/w/l.tar"]
        );
    }

    #[test]
    fn close_matches_prefer_the_same_repository() {
        let stored = [
            "docker.io/library/debian-nginx:bookworm",
            "127.0.0.1:5000/debian-nginx:bookworm",
            "docker.io/library/redis:7",
            "oci:/srv/images/nginx:1.25",
            "example.com/app:1",
        ];
        let found = close_matches("debian-nginx", stored);
        assert_eq!(
            found,
            vec![
                "127.0.0.1:5000/debian-nginx:bookworm",
                "docker.io/library/debian-nginx:bookworm",
                "oci:/srv/images/nginx:1.25",
            ]
        );
        assert_eq!(
            close_matches("redsi", stored),
            vec!["docker.io/library/redis:7"]
        );
        assert!(close_matches("postgres", stored).is_empty());
        assert!(close_matches("", stored).is_empty());
        assert_eq!(strsim::osa_distance("kitten", "sitting"), 3);
        assert_eq!(strsim::osa_distance("redsi", "redis"), 1);
    }
}
