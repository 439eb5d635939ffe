//! Who an app runs as: appc's `user` and `group` strings turned into numeric ids, resolved
//! against the app image's own /etc/passwd and /etc/group (never the guest's).
//!
//! appc (and rkt) accept three spellings for each: an absolute path, meaning the owner (or
//! group) of that file in the image; a decimal number, used as it is even when the image's
//! files do not list it; or a name, looked up in /etc/passwd (user) or /etc/group (group).

use std::io;

use thiserror::Error;

/// The numeric identity an app's processes get: setgroups, setgid, setuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub supplementary_gids: Vec<u32>,
}

/// Which of the two is being resolved; decides the database and the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn database(self) -> &'static str {
        match self {
            IdKind::User => "/etc/passwd",
            IdKind::Group => "/etc/group",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error(
        "{} {name:?} is not in the image's {}; use a {} the image defines, or a number",
        kind.noun(), kind.database(), kind.noun()
    )]
    UnknownName { kind: IdKind, name: String },

    #[error(
        "{} {name:?} cannot be looked up: the image's {} is unreadable ({reason}); add the \
         file to the image or give a number",
        kind.noun(), kind.database()
    )]
    Database {
        kind: IdKind,
        name: String,
        reason: String,
    },

    #[error(
        "{} {path:?} names a file whose owner should be used, but it cannot be read in the \
         image ({source}); give an existing file, a name or a number",
        kind.noun()
    )]
    OwnerFile {
        kind: IdKind,
        path: String,
        source: io::Error,
    },

    #[error("{} is empty; give a name, a number or an absolute file path", kind.noun())]
    Empty { kind: IdKind },
}

/// What resolution needs from the image, behind a trait so it can be tested without files.
pub trait ImageFiles {
    /// The content of /etc/passwd or /etc/group in the image.
    fn database(&self, kind: IdKind) -> io::Result<String>;
    /// The (uid, gid) owning `path` in the image.
    fn owner(&self, path: &str) -> io::Result<(u32, u32)>;
}

/// Resolves the app's `user` and `group`; supplementary gids are numbers already.
pub fn resolve(
    user: &str,
    group: &str,
    supplementary_gids: &[u32],
    image: &impl ImageFiles,
) -> Result<Identity, IdentityError> {
    Ok(Identity {
        uid: resolve_one(IdKind::User, user, image)?,
        gid: resolve_one(IdKind::Group, group, image)?,
        supplementary_gids: supplementary_gids.to_vec(),
    })
}

/// One id, in rkt's order: a path, then a number, then a name.
pub fn resolve_one(
    kind: IdKind,
    spec: &str,
    image: &impl ImageFiles,
) -> Result<u32, IdentityError> {
    if spec.is_empty() {
        return Err(IdentityError::Empty { kind });
    }
    if spec.starts_with('/') {
        let (uid, gid) = image
            .owner(spec)
            .map_err(|source| IdentityError::OwnerFile {
                kind,
                path: spec.to_owned(),
                source,
            })?;
        return Ok(match kind {
            IdKind::User => uid,
            IdKind::Group => gid,
        });
    }
    if spec.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(id) = spec.parse::<u32>() {
            return Ok(id);
        }
    }
    let database = image
        .database(kind)
        .map_err(|error| IdentityError::Database {
            kind,
            name: spec.to_owned(),
            reason: error.to_string(),
        })?;
    lookup_name(&database, spec).ok_or_else(|| IdentityError::UnknownName {
        kind,
        name: spec.to_owned(),
    })
}

/// The id of `name` in a passwd or group file: both have `name:password:id:...` lines, so the
/// third field is the uid (passwd) or the gid (group). Malformed lines and comments are
/// skipped, as libc does; the first matching line wins.
pub fn lookup_name(database: &str, name: &str) -> Option<u32> {
    database.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        fields.next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without fields
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
web:x:1000:1000::/home/web:/bin/sh
web:x:2000:2000:a later duplicate:/:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
tty:x:5:
staff:x:50:web
nogroup:x:65534:
";

    struct Image {
        passwd: Option<&'static str>,
        group: Option<&'static str>,
        owners: HashMap<&'static str, (u32, u32)>,
    }

    impl ImageFiles for Image {
        fn database(&self, kind: IdKind) -> io::Result<String> {
            let content = match kind {
                IdKind::User => self.passwd,
                IdKind::Group => self.group,
            };
            content
                .map(str::to_owned)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }

        fn owner(&self, path: &str) -> io::Result<(u32, u32)> {
            self.owners
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }
    }

    fn image() -> Image {
        Image {
            passwd: Some(PASSWD),
            group: Some(GROUP),
            owners: HashMap::from([("/home/web/data", (1000, 50))]),
        }
    }

    #[test]
    fn names_are_looked_up_in_the_image_files() {
        let id = resolve("web", "staff", &[5, 7], &image()).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 50,
                supplementary_gids: vec![5, 7]
            }
        );
        assert_eq!(
            resolve_one(IdKind::User, "nobody", &image()).unwrap(),
            65534
        );
        assert_eq!(resolve_one(IdKind::Group, "tty", &image()).unwrap(), 5);
        // The first line for a name wins.
        assert_eq!(lookup_name(PASSWD, "web"), Some(1000));
        // A name is not matched by prefix, and comment lines are no entries.
        assert_eq!(lookup_name(PASSWD, "we"), None);
        assert_eq!(lookup_name(PASSWD, "# a comment line"), None);
    }

    #[test]
    fn numbers_need_no_entry() {
        let empty = Image {
            passwd: None,
            group: None,
            owners: HashMap::new(),
        };
        assert_eq!(resolve_one(IdKind::User, "4242", &empty).unwrap(), 4242);
        assert_eq!(resolve_one(IdKind::Group, "0", &empty).unwrap(), 0);
        // Too big for a uid: treated as a name, and not found.
        let error = resolve_one(IdKind::User, "99999999999", &image()).unwrap_err();
        assert!(matches!(error, IdentityError::UnknownName { .. }));
    }

    #[test]
    fn paths_use_the_owner_of_the_file() {
        assert_eq!(
            resolve_one(IdKind::User, "/home/web/data", &image()).unwrap(),
            1000
        );
        assert_eq!(
            resolve_one(IdKind::Group, "/home/web/data", &image()).unwrap(),
            50
        );
        let message = resolve_one(IdKind::User, "/missing", &image())
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"/missing\""), "{message}");
    }

    #[test]
    fn unknown_names_and_missing_files_are_clear_errors() {
        let message = resolve_one(IdKind::User, "alice", &image())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("user \"alice\" is not in the image's /etc/passwd"),
            "{message}"
        );
        let no_group_file = Image {
            group: None,
            ..image()
        };
        let message = resolve_one(IdKind::Group, "staff", &no_group_file)
            .unwrap_err()
            .to_string();
        assert!(message.contains("/etc/group is unreadable"), "{message}");
        let message = resolve_one(IdKind::Group, "", &image())
            .unwrap_err()
            .to_string();
        assert!(message.contains("group is empty"), "{message}");
    }
}
