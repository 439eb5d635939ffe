//! The store's index: one SQLite database (`cas/db/index.sqlite`) saying which
//! images the store holds, their manifests and bookkeeping, and which rendered
//! trees belong to which image. The schema is versioned: `MIGRATIONS[n]` takes
//! version n to n+1, each applied in its own transaction and recorded in the
//! `schema_version` table, so an old store upgrades in place and a store from
//! a newer rkt is refused instead of misread.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension};

/// One step per schema version; never edit a released step, append a new one.
/// A step is SQL, then (for steps that derive rows from what is stored) a
/// function run in the same transaction.
const MIGRATIONS: &[(&str, Option<Backfill>)] = &[
    // 0 -> 1: images and their rendered trees.
    (
        "CREATE TABLE images (
        id TEXT PRIMARY KEY,            -- sha512-<hex> of the uncompressed ACI tar
        name TEXT NOT NULL,             -- the manifest's name
        labels TEXT NOT NULL,           -- the manifest's labels, as JSON
        manifest BLOB NOT NULL,         -- the manifest bytes as found in the image
        size INTEGER NOT NULL,          -- bytes of the stored blob
        import_time INTEGER NOT NULL,   -- unix seconds
        last_used INTEGER NOT NULL,     -- unix seconds
        source TEXT NOT NULL,           -- where it was fetched from
        signature_verified INTEGER NOT NULL
    );
    CREATE INDEX images_by_name ON images(name);
    CREATE TABLE trees (
        tree_id TEXT PRIMARY KEY,       -- directory name under cas/tree
        image_id TEXT NOT NULL          -- the image it renders (with its dependencies)
    );",
        None,
    ),
    // 1 -> 2: OCI/Docker images, kept natively as sha256 blobs.
    (
        "ALTER TABLE images ADD COLUMN format TEXT NOT NULL DEFAULT 'aci';  -- aci | oci
    CREATE TABLE blob_refs (
        image_id TEXT NOT NULL,
        role TEXT NOT NULL,             -- manifest | config | layer
        position INTEGER NOT NULL,      -- layer order, bottom first; 0 otherwise
        digest TEXT NOT NULL,           -- sha256:<hex>, a file under cas/blob/sha256
        PRIMARY KEY (image_id, role, position)
    );
    CREATE INDEX blob_refs_by_digest ON blob_refs(digest);",
        None,
    ),
    // 2 -> 3: what each pod uses, so that image rm/gc never take it away.
    (
        "CREATE TABLE pod_refs (
        pod_uuid TEXT NOT NULL,         -- a pod directory pods/<state>/<uuid>
        image_id TEXT NOT NULL,         -- an image of one of its trees (top or dependency)
        tree_id TEXT NOT NULL,          -- the tree under cas/tree the pod was prepared from
        PRIMARY KEY (pod_uuid, image_id, tree_id)
    );
    CREATE INDEX pod_refs_by_image ON pod_refs(image_id);",
        None,
    ),
    // 3 -> 4: Docker-style names, several per image (one per transport and
    // tag it was fetched under), and what each rendered tree weighs. The
    // Docker/OCI images already stored get the names they would get if
    // fetched now (`backfill_names`); ACIs keep appc's names and labels.
    (
        "CREATE TABLE image_names (
        name TEXT PRIMARY KEY,          -- docker.io/library/nginx:1.25, oci:/abs/path:tag, ...
        image_id TEXT NOT NULL,         -- the one image it names (a name fetched again moves)
        source TEXT NOT NULL,           -- what it was fetched from under this name
        added INTEGER NOT NULL          -- unix seconds
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);
    ALTER TABLE trees ADD COLUMN size INTEGER;  -- bytes the render unpacked; NULL before 4",
        Some(backfill_names),
    ),
    // 4 -> 5: what a trusted local file (the default stage1) was when it was imported, so
    // that a run can tell the same file from another without reading it (stage1_image.rs).
    (
        "CREATE TABLE file_stamps (
        source TEXT PRIMARY KEY,        -- file:///abs/path, as in images.source
        image_id TEXT NOT NULL,         -- what its bytes were imported as
        dev INTEGER NOT NULL,           -- the stat of the file taken before it was read;
        ino INTEGER NOT NULL,           -- 64-bit values keep their bits as SQLite's signed
        size INTEGER NOT NULL,          -- integers
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL
    );",
        None,
    ),
];

/// A migration step's second half: Rust over the rows the SQL left.
type Backfill = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

/// Schema 4's names for the Docker/OCI images stored before it: each gets
/// the name a fetch from its recorded source would give it now
/// (`crate::image::names::backfill`). A row whose manifest or source no
/// longer parses gets none and is still found by ID or appc name.
fn backfill_names(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, String, Vec<u8>, i64)> = {
        let mut stmt = tx
            .prepare("SELECT id, source, manifest, import_time FROM images WHERE format = 'oci'")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, source, manifest, import_time) in rows {
        let Ok(manifest) = appc::ImageManifest::from_json(&manifest) else {
            continue;
        };
        for name in crate::image::names::backfill(&source, &manifest) {
            tx.execute(
                "INSERT OR IGNORE INTO image_names (name, image_id, source, added)
                 VALUES (?1, ?2, ?3, ?4)",
                params![name, id, source, import_time],
            )?;
        }
    }
    Ok(())
}

/// What identifies one version of a local file without reading it: which file (device and
/// inode), its size, and its content's and its own last change (mtime, ctime; nanoseconds).
/// Any write, rename over it or `utimes` changes one of them, and nothing sets a ctime back.
/// 64-bit values are kept by their bits (`as i64`), as SQLite's integers are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: i64,
    pub ino: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStamp {
    pub fn of(metadata: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        FileStamp {
            dev: metadata.dev() as i64,
            ino: metadata.ino() as i64,
            size: metadata.size() as i64,
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// One thing a pod uses: tree `tree_id`, rendered from (among others) `image_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub pod_uuid: String,
    pub image_id: String,
    pub tree_id: String,
}

/// A sha256 blob an OCI image uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub role: &'static str,
    pub position: i64,
    pub digest: String,
}

/// A name of a Docker/OCI image (schema 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRow {
    pub name: String,
    pub image_id: String,
    pub source: String,
    pub added: i64,
}

#[derive(Debug, Clone)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub labels_json: String,
    pub manifest: Vec<u8>,
    pub size: u64,
    pub import_time: i64,
    pub last_used: i64,
    pub source: String,
    pub signature_verified: bool,
    /// `aci` or `oci`.
    pub format: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("image store index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "the image store index has schema version {found}, newer than this rkt knows ({known}); \
         use the rkt that wrote it, or a fresh --dir"
    )]
    NewerSchema { found: i64, known: i64 },
}

pub struct Index {
    conn: Connection,
}

/// How long one rkt waits for another's hold on the index before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Puts the database in WAL mode. The mode is stored in the file, so this is
/// a read once any rkt has set it. Switching a new database needs an
/// exclusive lock, and SQLite answers "database is locked" at once instead of
/// calling the busy handler when another process holds the file then (several
/// rkt processes opening a fresh store together), so the switch is retried
/// here until `timeout`.
fn use_wal(conn: &Connection, timeout: Duration) -> Result<(), IndexError> {
    let deadline = Instant::now() + timeout;
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(_) => return Ok(()),
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let conn = Connection::open(path)?;
        // Concurrent rkt processes wait for each other instead of failing.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL + FULL: readers never block the writer, and a commit survives a crash.
        use_wal(&conn, BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The write-ahead log stays between commands instead of being checkpointed into the
        // database and deleted when the last connection closes: that cost every command two
        // syncs, and the log's re-creation a sync of the directory. Checkpoints still happen
        // as SQLite's automatic ones, in a commit once the log holds 1000 pages, and a
        // commit in the log is as durable as one in the database.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        let mut index = Index { conn };
        index.migrate()?;
        Ok(index)
    }

    fn migrate(&mut self) -> Result<(), IndexError> {
        let known = MIGRATIONS.len() as i64;
        // IMMEDIATE: take the write lock up front so two first-time openers
        // do not both try to create the tables.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let current: i64 = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0);
        if current > known {
            return Err(IndexError::NewerSchema {
                found: current,
                known,
            });
        }
        for (step, (sql, backfill)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)?;
            if let Some(backfill) = backfill {
                backfill(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![step as i64 + 1],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    #[cfg(test)]
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        Ok(self
            .conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })?)
    }

    /// Adds an image and the blobs it uses, or refreshes `last_used` if it is
    /// already there (the same bytes fetched again; its import time stays the
    /// first one).
    pub fn upsert_image(&self, row: &ImageRow, blobs: &[BlobRef]) -> Result<(), IndexError> {
        self.store_image(row, blobs, &[], None)
    }

    /// [`upsert_image`](Self::upsert_image), plus in the same transaction the
    /// names the image was fetched under (`(name, source)`; a name another
    /// image had moves to this one, as a Docker tag does) and the tree
    /// rendered for it (`(tree ID, bytes unpacked if known)`), so a fetch's rows are
    /// all there or none is.
    pub fn store_image(
        &self,
        row: &ImageRow,
        blobs: &[BlobRef],
        names: &[(String, String)],
        tree: Option<(&str, Option<u64>)>,
    ) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO images (id, name, labels, manifest, size, import_time, last_used,
                                 source, signature_verified, format)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(id) DO UPDATE SET
                 last_used = excluded.last_used,
                 signature_verified = MAX(signature_verified, excluded.signature_verified)",
            params![
                row.id,
                row.name,
                row.labels_json,
                row.manifest,
                row.size as i64,
                row.import_time,
                row.last_used,
                row.source,
                row.signature_verified,
                row.format,
            ],
        )?;
        for blob in blobs {
            tx.execute(
                "INSERT OR REPLACE INTO blob_refs (image_id, role, position, digest)
                 VALUES (?1, ?2, ?3, ?4)",
                params![row.id, blob.role, blob.position, blob.digest],
            )?;
        }
        for (name, source) in names {
            // A name fetched again for the same image keeps its place.
            tx.execute(
                "INSERT INTO image_names (name, image_id, source, added)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET
                     image_id = excluded.image_id,
                     source = excluded.source,
                     added = excluded.added
                 WHERE image_id != excluded.image_id",
                params![name, row.id, source, row.last_used],
            )?;
        }
        if let Some((tree_id, size)) = tree {
            // A size already recorded stays when this fetch found the tree
            // cached and so knows none.
            tx.execute(
                "INSERT INTO trees (tree_id, image_id, size) VALUES (?1, ?2, ?3)
                 ON CONFLICT(tree_id) DO UPDATE SET size = COALESCE(excluded.size, size)",
                params![tree_id, row.id, size.map(|size| size as i64)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn name_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NameRow> {
        Ok(NameRow {
            name: row.get(0)?,
            image_id: row.get(1)?,
            source: row.get(2)?,
            added: row.get(3)?,
        })
    }

    /// Every name, oldest first (names added in the same second in the
    /// order they were added: rowid).
    pub fn names(&self) -> Result<Vec<NameRow>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, image_id, source, added FROM image_names ORDER BY added, rowid",
        )?;
        let rows = stmt.query_map([], Self::name_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The names of one image, oldest first.
    pub fn names_of(&self, image_id: &str) -> Result<Vec<NameRow>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, image_id, source, added FROM image_names WHERE image_id = ?1
             ORDER BY added, rowid",
        )?;
        let rows = stmt.query_map(params![image_id], Self::name_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The image `name` names, if any.
    pub fn image_named(&self, name: &str) -> Result<Option<ImageRow>, IndexError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM images WHERE id = (SELECT image_id FROM image_names WHERE name = ?1)",
                    Self::COLUMNS
                ),
                params![name],
                Self::row,
            )
            .optional()?)
    }

    /// Drops one name; returns how many names its image has left, or
    /// `None` if no image had that name.
    pub fn remove_name(&self, name: &str) -> Result<Option<usize>, IndexError> {
        let tx = self.conn.unchecked_transaction()?;
        let image: Option<String> = tx
            .query_row(
                "SELECT image_id FROM image_names WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        let Some(image) = image else {
            return Ok(None);
        };
        tx.execute("DELETE FROM image_names WHERE name = ?1", params![name])?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM image_names WHERE image_id = ?1",
            params![image],
            |row| row.get(0),
        )?;
        tx.commit()?;
        Ok(Some(left.max(0) as usize))
    }

    /// The blobs an image uses, in order (manifest, config, layers bottom first).
    pub fn blobs_of(&self, image_id: &str) -> Result<Vec<BlobRef>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT role, position, digest FROM blob_refs WHERE image_id = ?1
             ORDER BY CASE role WHEN 'manifest' THEN 0 WHEN 'config' THEN 1 ELSE 2 END, position",
        )?;
        let rows = stmt.query_map(params![image_id], |row| {
            let role: String = row.get(0)?;
            Ok(BlobRef {
                role: match role.as_str() {
                    "manifest" => "manifest",
                    "config" => "config",
                    _ => "layer",
                },
                position: row.get(1)?,
                digest: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Images whose manifest or config digest starts with `prefix`
    /// (`sha256:...`): Docker/OCI images by their own IDs.
    pub fn images_with_digest_prefix(&self, prefix: &str) -> Result<Vec<ImageRow>, IndexError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT DISTINCT {} FROM images WHERE id IN (
                 SELECT image_id FROM blob_refs
                 WHERE role IN ('manifest', 'config') AND substr(digest, 1, length(?1)) = ?1)",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map(params![prefix], Self::row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every digest some image still uses.
    pub fn referenced_digests(&self) -> Result<std::collections::HashSet<String>, IndexError> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT digest FROM blob_refs")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
        Ok(ImageRow {
            id: row.get(0)?,
            name: row.get(1)?,
            labels_json: row.get(2)?,
            manifest: row.get(3)?,
            size: row.get::<_, i64>(4)?.max(0) as u64,
            import_time: row.get(5)?,
            last_used: row.get(6)?,
            source: row.get(7)?,
            signature_verified: row.get(8)?,
            format: row.get(9)?,
        })
    }

    const COLUMNS: &'static str = "id, name, labels, manifest, size, import_time, last_used, \
                                   source, signature_verified, format";

    pub fn images(&self) -> Result<Vec<ImageRow>, IndexError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM images ORDER BY import_time, id",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map([], Self::row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRow>, IndexError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {} FROM images WHERE id = ?1", Self::COLUMNS),
                params![id],
                Self::row,
            )
            .optional()?)
    }

    pub fn images_with_id_prefix(&self, prefix: &str) -> Result<Vec<ImageRow>, IndexError> {
        // substr instead of LIKE: IDs never contain LIKE wildcards, but a
        // user-typed prefix could.
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM images WHERE substr(id, 1, length(?1)) = ?1",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map(params![prefix], Self::row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn images_named(&self, name: &str) -> Result<Vec<ImageRow>, IndexError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM images WHERE name = ?1 ORDER BY import_time DESC, id",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map(params![name], Self::row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn newest_from_source(&self, source: &str) -> Result<Option<ImageRow>, IndexError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM images WHERE source = ?1 ORDER BY import_time DESC, id LIMIT 1",
                    Self::COLUMNS
                ),
                params![source],
                Self::row,
            )
            .optional()?)
    }

    /// The image `source` (a local file) was imported as, and the file's stamp then.
    pub fn file_stamp(&self, source: &str) -> Result<Option<(String, FileStamp)>, IndexError> {
        Ok(self
            .conn
            .query_row(
                "SELECT image_id, dev, ino, size, mtime_ns, ctime_ns FROM file_stamps
                 WHERE source = ?1",
                params![source],
                |row| {
                    Ok((
                        row.get(0)?,
                        FileStamp {
                            dev: row.get(1)?,
                            ino: row.get(2)?,
                            size: row.get(3)?,
                            mtime_ns: row.get(4)?,
                            ctime_ns: row.get(5)?,
                        },
                    ))
                },
            )
            .optional()?)
    }

    /// Records that `source`, stamped `stamp` before it was read, was imported as `image_id`.
    pub fn set_file_stamp(
        &self,
        source: &str,
        image_id: &str,
        stamp: &FileStamp,
    ) -> Result<(), IndexError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO file_stamps (source, image_id, dev, ino, size, mtime_ns, ctime_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                source,
                image_id,
                stamp.dev,
                stamp.ino,
                stamp.size,
                stamp.mtime_ns,
                stamp.ctime_ns
            ],
        )?;
        Ok(())
    }

    /// Sets an image's last-used time. Not synced: last-used times only steer `rkt image
    /// gc`, and a power cut that loses the latest one costs nothing, while a sync of the log
    /// on every `rkt run` (one per image it renders) does. The commit is still atomic
    /// (synchronous=NORMAL in WAL mode), and the next synced commit makes it durable.
    pub fn touch(&self, id: &str, now: i64) -> Result<(), IndexError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let updated = self.conn.execute(
            "UPDATE images SET last_used = ?2 WHERE id = ?1",
            params![id, now],
        );
        // Every other write stays synced, even when the update failed.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        updated?;
        Ok(())
    }

    /// Removes an image, its tree records and blob references in one
    /// transaction; returns the tree IDs whose directories the caller should
    /// delete, and the digests no other image uses any more.
    pub fn remove_image(&mut self, id: &str) -> Result<(Vec<String>, Vec<String>), IndexError> {
        // IMMEDIATE: this transaction reads before it writes, and a deferred
        // one would fail at once ("database is locked") if another rkt
        // committed between the read and the write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let trees = {
            let mut stmt = tx.prepare("SELECT tree_id FROM trees WHERE image_id = ?1")?;
            let rows = stmt.query_map(params![id], |row| row.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        tx.execute("DELETE FROM trees WHERE image_id = ?1", params![id])?;
        let digests = {
            let mut stmt =
                tx.prepare("SELECT DISTINCT digest FROM blob_refs WHERE image_id = ?1")?;
            let rows = stmt.query_map(params![id], |row| row.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        tx.execute("DELETE FROM blob_refs WHERE image_id = ?1", params![id])?;
        let mut orphaned = Vec::new();
        for digest in digests {
            let still_used: i64 = tx.query_row(
                "SELECT COUNT(*) FROM blob_refs WHERE digest = ?1",
                params![digest],
                |row| row.get(0),
            )?;
            if still_used == 0 {
                orphaned.push(digest);
            }
        }
        tx.execute("DELETE FROM image_names WHERE image_id = ?1", params![id])?;
        tx.execute("DELETE FROM images WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok((trees, orphaned))
    }

    /// Records a rendered tree and the bytes its render unpacked.
    pub fn add_tree(&self, tree_id: &str, image_id: &str, size: u64) -> Result<(), IndexError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO trees (tree_id, image_id, size) VALUES (?1, ?2, ?3)",
            params![tree_id, image_id, size as i64],
        )?;
        Ok(())
    }

    /// The bytes a tree's render unpacked: `None` for a tree without a row,
    /// or rendered before schema 4 recorded it.
    pub fn tree_size(&self, tree_id: &str) -> Result<Option<u64>, IndexError> {
        let size: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT size FROM trees WHERE tree_id = ?1",
                params![tree_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(size.flatten().map(|size| size.max(0) as u64))
    }

    /// Records, in one transaction, that pod `pod_uuid` uses each tree of
    /// `trees` (tree ID, and the IDs of the images it was rendered from).
    pub fn add_pod_refs(
        &self,
        pod_uuid: &str,
        trees: &[(String, Vec<String>)],
    ) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction()?;
        for (tree_id, images) in trees {
            for image_id in images {
                tx.execute(
                    "INSERT OR IGNORE INTO pod_refs (pod_uuid, image_id, tree_id)
                     VALUES (?1, ?2, ?3)",
                    params![pod_uuid, image_id, tree_id],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn pod_refs(&self) -> Result<Vec<PodRef>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT pod_uuid, image_id, tree_id FROM pod_refs ORDER BY pod_uuid, image_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(PodRef {
                pod_uuid: row.get(0)?,
                image_id: row.get(1)?,
                tree_id: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops every record of the pods in `pod_uuids` (pods that no longer exist).
    pub fn forget_pods(&self, pod_uuids: &[String]) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction()?;
        for pod in pod_uuids {
            tx.execute("DELETE FROM pod_refs WHERE pod_uuid = ?1", params![pod])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `read` inside one read transaction, so every query it makes
    /// sees the same snapshot of the index (rows another rkt commits
    /// meanwhile are not half seen).
    pub fn snapshot<T, E: From<IndexError>>(
        &self,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(IndexError::from)?;
        let result = read();
        // Nothing was written: ending it either way only ends the snapshot.
        drop(tx);
        result
    }

    /// Every tree row: (tree ID, the image it renders).
    pub fn trees(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT tree_id, image_id FROM trees ORDER BY tree_id")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn tree_ids(&self) -> Result<Vec<String>, IndexError> {
        let mut stmt = self.conn.prepare("SELECT tree_id FROM trees")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, import_time: i64) -> ImageRow {
        ImageRow {
            id: id.to_string(),
            name: name.to_string(),
            labels_json: "[]".to_string(),
            manifest: b"{}".to_vec(),
            size: 10,
            import_time,
            last_used: import_time,
            source: "test".to_string(),
            signature_verified: false,
            format: "aci".to_string(),
        }
    }

    #[test]
    fn many_first_opens_of_one_fresh_index_all_succeed() {
        // Several rkt processes starting on an empty --dir together: every
        // one must open the index, none may fail with "database is locked".
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("i.sqlite");
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Index::open(&path).map(|_| ()))
                })
                .collect();
            for opener in openers {
                let opened = opener.join().unwrap();
                assert!(opened.is_ok(), "round {round}: {opened:?}");
            }
        }
    }

    #[test]
    fn commits_outlive_the_connection_in_the_kept_log_and_touch_leaves_writes_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        {
            let index = Index::open(&path).unwrap();
            index
                .upsert_image(&row("sha512-01", "example.com/one", 1), &[])
                .unwrap();
            index.touch("sha512-01", 42).unwrap();
            let synchronous: i64 = index
                .conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(synchronous, 2, "FULL again after the unsynced touch");
        }
        // No checkpoint on close: the log is still there, and what it holds is read back.
        assert!(dir.path().join("i.sqlite-wal").exists());
        let index = Index::open(&path).unwrap();
        assert_eq!(index.image("sha512-01").unwrap().unwrap().last_used, 42);
    }

    #[test]
    fn shared_blobs_are_orphaned_only_with_their_last_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let blob = |role, position, digest: &str| BlobRef {
            role,
            position,
            digest: digest.to_string(),
        };
        let mut one = row("sha512-01", "example.com/one", 1);
        one.format = "oci".to_string();
        let mut two = row("sha512-02", "example.com/two", 2);
        two.format = "oci".to_string();
        index
            .upsert_image(
                &one,
                &[
                    blob("manifest", 0, "sha256:m1"),
                    blob("layer", 0, "sha256:base"),
                    blob("layer", 1, "sha256:top1"),
                ],
            )
            .unwrap();
        index
            .upsert_image(
                &two,
                &[
                    blob("manifest", 0, "sha256:m2"),
                    blob("layer", 0, "sha256:base"),
                ],
            )
            .unwrap();
        let layers: Vec<_> = index
            .blobs_of("sha512-01")
            .unwrap()
            .into_iter()
            .map(|b| b.digest)
            .collect();
        assert_eq!(layers, vec!["sha256:m1", "sha256:base", "sha256:top1"]);
        assert_eq!(
            index.images_with_digest_prefix("sha256:m2").unwrap()[0].id,
            "sha512-02"
        );
        assert!(
            index
                .images_with_digest_prefix("sha256:base")
                .unwrap()
                .is_empty(),
            "layers are not image IDs"
        );
        let (_, mut orphaned) = index.remove_image("sha512-01").unwrap();
        orphaned.sort();
        assert_eq!(orphaned, vec!["sha256:m1", "sha256:top1"]);
        assert!(index.referenced_digests().unwrap().contains("sha256:base"));
    }

    #[test]
    fn upgrades_a_version_1_store_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].0).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 INSERT INTO images VALUES ('sha512-old', 'example.com/old', '[]', x'7b7d', 1, 1, 1, 'f', 0);",
            )
            .unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let old = index.image("sha512-old").unwrap().unwrap();
        assert_eq!(old.format, "aci", "rows from before OCI support are ACIs");
        assert!(index.blobs_of("sha512-old").unwrap().is_empty());
    }

    #[test]
    fn schema_4_names_the_docker_images_already_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let manifest = |annotations: serde_json::Value| {
            serde_json::json!({
                "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "x",
                "annotations": annotations,
            })
            .to_string()
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL);")
                .unwrap();
            for (step, (sql, _)) in MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_version VALUES (?1)",
                    params![step as i64 + 1],
                )
                .unwrap();
            }
            let insert = |id: &str, source: &str, manifest: String, format: &str| {
                conn.execute(
                    "INSERT INTO images VALUES (?1, 'x', '[]', ?2, 1, 5, 5, ?3, 0, ?4)",
                    params![id, manifest.into_bytes(), source, format],
                )
                .unwrap();
            };
            insert(
                "sha512-reg",
                "docker://busybox",
                manifest(serde_json::json!([])),
                "oci",
            );
            insert(
                "sha512-saved",
                "docker-archive:/w/saved.tar",
                manifest(serde_json::json!([
                    {"name": "appc.io/docker/repository", "value": "debian-nginx"},
                    {"name": "appc.io/docker/tag", "value": "bookworm"}
                ])),
                "oci",
            );
            insert(
                "sha512-layout",
                "oci:/w/oci",
                manifest(serde_json::json!([{"name": "appc.io/docker/tag", "value": "1.0"}])),
                "oci",
            );
            insert(
                "sha512-aci",
                "/w/a.aci",
                manifest(serde_json::json!([])),
                "aci",
            );
            insert("sha512-broken", "oci:/w/b", "not json".to_string(), "oci");
            conn.execute("INSERT INTO trees VALUES ('deps-old', 'sha512-aci')", [])
                .unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let names: Vec<(String, String)> = index
            .names()
            .unwrap()
            .into_iter()
            .map(|row| (row.name, row.image_id))
            .collect();
        let expected = [
            ("docker.io/library/busybox:latest", "sha512-reg"),
            ("docker.io/library/debian-nginx:bookworm", "sha512-saved"),
            ("oci:/w/oci:1.0", "sha512-layout"),
        ];
        assert_eq!(names.len(), expected.len(), "{names:?}");
        for (name, id) in expected {
            assert!(
                names.contains(&(name.to_string(), id.to_string())),
                "{names:?}"
            );
            assert_eq!(index.image_named(name).unwrap().unwrap().id, id);
        }
        assert!(
            index.image("sha512-broken").unwrap().is_some(),
            "kept, unnamed"
        );
        assert_eq!(index.tree_size("deps-old").unwrap(), None, "size unknown");
    }

    #[test]
    fn names_move_between_images_and_go_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let named = |name: &str| vec![(name.to_string(), "src".to_string())];
        let mut a = row("sha512-a", "x", 1);
        a.format = "oci".to_string();
        let mut b = row("sha512-b", "x", 2);
        b.format = "oci".to_string();
        index.store_image(&a, &[], &named("r/x:1"), None).unwrap();
        index.store_image(&a, &[], &named("r/x:2"), None).unwrap();
        assert_eq!(index.names_of("sha512-a").unwrap().len(), 2);
        // The tag fetched again names another image now.
        index
            .store_image(&b, &[], &named("r/x:1"), Some(("deps-b", Some(9))))
            .unwrap();
        assert_eq!(index.image_named("r/x:1").unwrap().unwrap().id, "sha512-b");
        assert_eq!(index.tree_size("deps-b").unwrap(), Some(9));
        // Found cached by a later fetch: the recorded size stays.
        index
            .store_image(&b, &[], &[], Some(("deps-b", None)))
            .unwrap();
        assert_eq!(index.tree_size("deps-b").unwrap(), Some(9));
        assert_eq!(index.remove_name("r/x:2").unwrap(), Some(0));
        assert_eq!(index.remove_name("r/x:2").unwrap(), None);
        index.remove_image("sha512-b").unwrap();
        assert!(index.image_named("r/x:1").unwrap().is_none());
        assert!(index.names().unwrap().is_empty());
    }

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let index = Index::open(&path).unwrap();
            assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        }
        // Reopening applies nothing twice.
        let index = Index::open(&path).unwrap();
        let rows: i64 = index
            .conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MIGRATIONS.len() as i64);
        index
            .conn
            .execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(index);
        let err = Index::open(&path).err().unwrap();
        assert!(
            matches!(err, IndexError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn pod_refs_are_recorded_once_and_forgotten_per_pod() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let trees = vec![
            (
                "deps-a".to_string(),
                vec!["sha512-base".to_string(), "sha512-app".to_string()],
            ),
            ("deps-s1".to_string(), vec!["sha512-s1".to_string()]),
        ];
        index.add_pod_refs("pod-1", &trees).unwrap();
        index.add_pod_refs("pod-1", &trees).unwrap();
        index.add_pod_refs("pod-2", &trees[1..]).unwrap();
        let refs = index.pod_refs().unwrap();
        assert_eq!(refs.len(), 4, "{refs:?}");
        index.forget_pods(&["pod-1".to_string()]).unwrap();
        assert_eq!(
            index.pod_refs().unwrap(),
            vec![PodRef {
                pod_uuid: "pod-2".to_string(),
                image_id: "sha512-s1".to_string(),
                tree_id: "deps-s1".to_string(),
            }]
        );
    }

    #[test]
    fn upsert_keeps_first_import_time_and_finds_by_prefix_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        index
            .upsert_image(&row("sha512-aaa1", "example.com/a", 100), &[])
            .unwrap();
        index
            .upsert_image(&row("sha512-aaa1", "example.com/a", 200), &[])
            .unwrap();
        index
            .upsert_image(&row("sha512-aab2", "example.com/a", 150), &[])
            .unwrap();
        let a = index.image("sha512-aaa1").unwrap().unwrap();
        assert_eq!((a.import_time, a.last_used), (100, 200));
        assert_eq!(index.images_with_id_prefix("sha512-aa").unwrap().len(), 2);
        assert_eq!(index.images_with_id_prefix("sha512-aab").unwrap().len(), 1);
        assert_eq!(index.images_with_id_prefix("sha512-a%").unwrap().len(), 0);
        let named = index.images_named("example.com/a").unwrap();
        assert_eq!(named[0].id, "sha512-aab2", "newest import first");

        index.add_tree("deps-x", "sha512-aaa1", 7).unwrap();
        assert_eq!(index.tree_size("deps-x").unwrap(), Some(7));
        assert_eq!(
            index.remove_image("sha512-aaa1").unwrap(),
            (vec!["deps-x".to_string()], vec![])
        );
        assert!(index.image("sha512-aaa1").unwrap().is_none());
        assert!(index.tree_ids().unwrap().is_empty());
    }
}
