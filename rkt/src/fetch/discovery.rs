//! appc meta discovery (appc `discovery.md`): turning an image name such as
//! `example.com/app:1.0` into the URLs of its ACI and signature by reading
//! `<meta name="ac-discovery" content="PREFIX TEMPLATE">` tags from
//! `https://NAME?ac-discovery=1`, retrying with shorter name prefixes.

use std::collections::BTreeMap;

/// Where discovery found an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub aci: String,
    pub signature: String,
}

/// One `ac-discovery` meta tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaTag {
    pub prefix: String,
    pub template: String,
}

/// Reads every `<meta name="ac-discovery" content="...">` tag from a page.
/// Only the tags matter, so this scans for them rather than parsing HTML.
pub fn meta_tags(html: &str, wanted_name: &str) -> Vec<MetaTag> {
    let mut tags = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<meta") {
        let start = from + start;
        let Some(end) = lower[start..].find('>') else {
            break;
        };
        let tag = &html[start..start + end];
        from = start + end;
        let attributes = attributes(tag);
        if attributes.get("name").map(String::as_str) != Some(wanted_name) {
            continue;
        }
        let Some(content) = attributes.get("content") else {
            continue;
        };
        let mut parts = content.split_whitespace();
        if let (Some(prefix), Some(template)) = (parts.next(), parts.next()) {
            tags.push(MetaTag {
                prefix: prefix.to_string(),
                template: template.to_string(),
            });
        }
    }
    tags
}

/// `key="value"` / `key='value'` attributes of one tag, keys lowercased.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag.trim_start_matches('<');
    rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = match after.chars().next() {
            Some(quote @ ('"' | '\'')) => match after[1..].find(quote) {
                Some(close) => (&after[1..1 + close], &after[close + 2..]),
                None => break,
            },
            _ => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.insert(key, value.to_string());
        rest = remaining;
    }
    out
}

/// Fills a template's `{name}`, `{version}`, `{os}`, `{arch}`, `{ext}`. A
/// template with a placeholder left unfilled is unusable: `None`.
pub fn fill(template: &str, values: &BTreeMap<&str, String>) -> Option<String> {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    (!out.contains('{')).then_some(out)
}

/// Runs discovery for `name` with `labels` (version, os, arch): `get` fetches
/// a discovery page and returns its body, or `None` when the server has none
/// (4xx, unreachable); then the first matching template that fills wins.
pub fn discover(
    name: &str,
    labels: &BTreeMap<&str, String>,
    scheme: &str,
    mut get: impl FnMut(&str) -> Option<String>,
) -> Option<Endpoints> {
    let mut prefix = name;
    loop {
        let url = format!("{scheme}://{prefix}?ac-discovery=1");
        if let Some(page) = get(&url) {
            for tag in meta_tags(&page, "ac-discovery") {
                if !name.starts_with(&tag.prefix) {
                    continue;
                }
                let mut values = labels.clone();
                values.insert("name", name.to_string());
                values.insert("ext", "aci".to_string());
                let Some(aci) = fill(&tag.template, &values) else {
                    continue;
                };
                values.insert("ext", "aci.asc".to_string());
                let Some(signature) = fill(&tag.template, &values) else {
                    continue;
                };
                return Some(Endpoints { aci, signature });
            }
        }
        match prefix.rsplit_once('/') {
            Some((parent, _)) => prefix = parent,
            None => return None,
        }
    }
}

/// Finds the public key URLs an image name's owner publishes with
/// `<meta name="ac-discovery-pubkeys" content="PREFIX URL">` (for `rkt trust
/// --prefix=NAME` without a key file), walking up the name like `discover`.
pub fn discover_pubkeys(
    name: &str,
    scheme: &str,
    mut get: impl FnMut(&str) -> Option<String>,
) -> Vec<String> {
    let mut prefix = name;
    loop {
        let url = format!("{scheme}://{prefix}?ac-discovery=1");
        if let Some(page) = get(&url) {
            let keys: Vec<String> = meta_tags(&page, "ac-discovery-pubkeys")
                .into_iter()
                .filter(|tag| name.starts_with(&tag.prefix))
                .map(|tag| tag.template)
                .collect();
            if !keys.is_empty() {
                return keys;
            }
        }
        match prefix.rsplit_once('/') {
            Some((parent, _)) => prefix = parent,
            None => return Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("version", "1.0".to_string()),
            ("os", "linux".to_string()),
            ("arch", "amd64".to_string()),
        ])
    }

    #[test]
    fn reads_meta_tags_in_any_quoting() {
        let html = r#"<html><head>
            <META name="ac-discovery" content="example.com https://example.com/{name}-{version}-{os}-{arch}.{ext}">
            <meta content='example.com/x https://x/{name}.{ext}' name='ac-discovery' />
            <meta name="ac-discovery-pubkeys" content="example.com https://example.com/pubkeys.gpg">
            <meta name="description" content="other">
        </head></html>"#;
        let tags = meta_tags(html, "ac-discovery");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1].template, "https://x/{name}.{ext}");
        assert_eq!(
            meta_tags(html, "ac-discovery-pubkeys")[0].prefix,
            "example.com"
        );
    }

    #[test]
    fn discovers_through_parent_prefixes() {
        let mut asked = Vec::new();
        let found = discover("example.com/app/worker", &labels(), "https", |url| {
            asked.push(url.to_string());
            (url == "https://example.com/app?ac-discovery=1").then(|| {
                r#"<meta name="ac-discovery" content="example.org https://wrong/{name}.{ext}">
                   <meta name="ac-discovery" content="example.com/app https://dl.example.com/{name}-{version}-{os}-{arch}.{ext}">"#
                    .to_string()
            })
        })
        .unwrap();
        assert_eq!(
            asked,
            vec![
                "https://example.com/app/worker?ac-discovery=1",
                "https://example.com/app?ac-discovery=1"
            ]
        );
        assert_eq!(
            found.aci,
            "https://dl.example.com/example.com/app/worker-1.0-linux-amd64.aci"
        );
        assert_eq!(
            found.signature,
            "https://dl.example.com/example.com/app/worker-1.0-linux-amd64.aci.asc"
        );
    }

    #[test]
    fn discovers_pubkeys() {
        let keys = discover_pubkeys("example.com/app", "https", |url| {
            (url == "https://example.com?ac-discovery=1").then(|| {
                r#"<meta name="ac-discovery-pubkeys" content="example.com https://example.com/pubkeys.gpg">"#
                    .to_string()
            })
        });
        assert_eq!(keys, vec!["https://example.com/pubkeys.gpg"]);
    }

    #[test]
    fn templates_with_unknown_placeholders_are_skipped() {
        let mut values = labels();
        values.insert("name", "a".to_string());
        assert_eq!(fill("https://x/{name}-{channel}.aci", &values), None);
        assert!(discover("example.com/a", &labels(), "https", |_| None).is_none());
    }
}
