//! Volumes and snapshots on disk. Everything the gRPC layer promises (idempotent create and
//! delete, restore from a snapshot, clone) is decided here, so it is tested without gRPC.
//!
//! Layout under the state directory:
//! - `<id>/` a volume's data, `<id>.volume.json` its record;
//! - `<id>.snap/` a snapshot's copy of the data, `<id>.snap.json` its record;
//! - `.tmp-*` copies being made; renamed into place when complete, so a crash never leaves a
//!   half-copied volume or snapshot under a real name.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Capacity given to a volume whose request names none.
pub const DEFAULT_CAPACITY: i64 = 1 << 30;

#[derive(Debug)]
pub enum StoreError {
    InvalidName(String),
    NotFound(String),
    AlreadyExists(String),
    Io(io::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::InvalidName(why) => write!(f, "invalid name: {why}"),
            StoreError::NotFound(what) => write!(f, "{what} not found"),
            StoreError::AlreadyExists(why) => write!(f, "{why}"),
            StoreError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a new volume's content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub id: String,
    pub capacity_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub id: String,
    pub source_volume_id: String,
    /// Bytes of file data copied.
    pub size_bytes: i64,
    pub created_unix_secs: i64,
    pub created_nanos: i32,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        // Leftovers of copies a crash interrupted.
        for entry in fs::read_dir(&root)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_any(&entry.path())?;
            }
        }
        Ok(Store { root })
    }

    /// The directory holding a volume's data.
    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The directory holding a snapshot's copy of the data.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.snap"))
    }

    fn volume_record_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.volume.json"))
    }

    fn snapshot_record_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.snap.json"))
    }

    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        check_name(id)?;
        read_record(&self.volume_record_path(id))
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        check_name(id)?;
        read_record(&self.snapshot_record_path(id))
    }

    /// Creates volume `name`, empty or as a copy of `source`. Asking again for the same volume
    /// returns it (the sidecars retry); asking for a different one under a used name is refused.
    pub fn create_volume(
        &self,
        name: &str,
        capacity_bytes: i64,
        source: Option<Source>,
    ) -> Result<VolumeRecord> {
        check_name(name)?;
        let wanted = VolumeRecord {
            id: name.to_string(),
            capacity_bytes,
            source,
        };
        if let Some(existing) = self.volume(name)? {
            return if existing == wanted {
                Ok(existing)
            } else {
                Err(StoreError::AlreadyExists(format!(
                    "volume {name} exists with other parameters ({existing:?})"
                )))
            };
        }
        let from = match &wanted.source {
            None => None,
            Some(Source::Snapshot(id)) => {
                self.snapshot(id)?
                    .ok_or_else(|| StoreError::NotFound(format!("snapshot {id}")))?;
                Some(self.snapshot_dir(id))
            }
            Some(Source::Volume(id)) => {
                self.volume(id)?
                    .ok_or_else(|| StoreError::NotFound(format!("volume {id}")))?;
                Some(self.volume_dir(id))
            }
        };
        let tmp = self.root.join(format!(".tmp-{name}"));
        remove_any(&tmp)?;
        match from {
            Some(from) => {
                copy_tree(&from, &tmp)?;
            }
            None => fs::create_dir(&tmp)?,
        }
        let dir = self.volume_dir(name);
        // A directory without a record is a leftover of a crash between the two renames.
        remove_any(&dir)?;
        fs::rename(&tmp, &dir)?;
        write_record(&self.volume_record_path(name), &wanted)?;
        Ok(wanted)
    }

    /// Deletes a volume and its data; deleting one that is gone succeeds.
    pub fn delete_volume(&self, id: &str) -> Result<()> {
        check_name(id)?;
        remove_any(&self.volume_record_path(id))?;
        remove_any(&self.volume_dir(id))?;
        Ok(())
    }

    /// Copies volume `source_volume_id` into snapshot `name`. Idempotent like `create_volume`.
    pub fn create_snapshot(&self, name: &str, source_volume_id: &str) -> Result<SnapshotRecord> {
        check_name(name)?;
        if let Some(existing) = self.snapshot(name)? {
            return if existing.source_volume_id == source_volume_id {
                Ok(existing)
            } else {
                Err(StoreError::AlreadyExists(format!(
                    "snapshot {name} exists for volume {}",
                    existing.source_volume_id
                )))
            };
        }
        self.volume(source_volume_id)?
            .ok_or_else(|| StoreError::NotFound(format!("volume {source_volume_id}")))?;
        let tmp = self.root.join(format!(".tmp-{name}.snap"));
        remove_any(&tmp)?;
        let size_bytes = copy_tree(&self.volume_dir(source_volume_id), &tmp)?;
        let dir = self.snapshot_dir(name);
        remove_any(&dir)?;
        fs::rename(&tmp, &dir)?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let record = SnapshotRecord {
            id: name.to_string(),
            source_volume_id: source_volume_id.to_string(),
            size_bytes: i64::try_from(size_bytes).unwrap_or(i64::MAX),
            created_unix_secs: i64::try_from(created.as_secs()).unwrap_or(i64::MAX),
            created_nanos: i32::try_from(created.subsec_nanos()).unwrap_or(0),
        };
        write_record(&self.snapshot_record_path(name), &record)?;
        Ok(record)
    }

    /// Deletes a snapshot; deleting one that is gone succeeds. Volumes restored from it keep
    /// their data: they are copies.
    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        check_name(id)?;
        remove_any(&self.snapshot_record_path(id))?;
        remove_any(&self.snapshot_dir(id))?;
        Ok(())
    }

    /// Every snapshot, ordered by id (the order paging relies on).
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".snap.json")
                && let Some(record) = self.snapshot(id)?
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Names become file names: refuse what could escape the state directory or collide with our
/// own suffixes.
fn check_name(name: &str) -> Result<()> {
    let bad = if name.is_empty() {
        Some("empty")
    } else if name.len() > 200 {
        Some("longer than 200 characters")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.ends_with(".snap") || name.ends_with(".json") {
        Some("ends with .snap or .json")
    } else {
        None
    };
    match bad {
        Some(why) => Err(StoreError::InvalidName(format!("{name:?} {why}"))),
        None => Ok(()),
    }
}

fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(record).map_err(io::Error::other)?,
    )?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies a directory tree (files with their permissions, directories, symlinks as links) and
/// returns the bytes of file data copied.
fn copy_tree(from: &Path, to: &Path) -> io::Result<u64> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else {
            bytes += fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state")).unwrap();
        (dir, store)
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(dir.join(rel)).unwrap()
    }

    #[test]
    fn restore_from_snapshot_has_the_data_of_snapshot_time() {
        let (_tmp, s) = store();
        s.create_volume("pvc-1", 1 << 20, None).unwrap();
        let vol = s.volume_dir("pvc-1");
        write(&vol, "db/data.txt", "version 1");
        std::os::unix::fs::symlink("db/data.txt", vol.join("current")).unwrap();

        let snap = s.create_snapshot("snapshot-1", "pvc-1").unwrap();
        assert_eq!(snap.size_bytes, 9);
        write(&vol, "db/data.txt", "corrupted by the upgrade");

        let restored = s
            .create_volume(
                "pvc-2",
                1 << 20,
                Some(Source::Snapshot("snapshot-1".into())),
            )
            .unwrap();
        assert_eq!(restored.source, Some(Source::Snapshot("snapshot-1".into())));
        let dir = s.volume_dir("pvc-2");
        assert_eq!(read(&dir, "db/data.txt"), "version 1");
        assert_eq!(read(&dir, "current"), "version 1", "symlink kept as a link");
        assert_eq!(read(&vol, "db/data.txt"), "corrupted by the upgrade");

        // The restored volume is a copy: deleting the snapshot leaves it whole.
        s.delete_snapshot("snapshot-1").unwrap();
        assert!(!s.snapshot_dir("snapshot-1").exists());
        assert_eq!(read(&dir, "db/data.txt"), "version 1");
    }

    #[test]
    fn clone_copies_a_volume() {
        let (_tmp, s) = store();
        s.create_volume("a", 10, None).unwrap();
        write(&s.volume_dir("a"), "f", "x");
        s.create_volume("b", 10, Some(Source::Volume("a".into())))
            .unwrap();
        assert_eq!(read(&s.volume_dir("b"), "f"), "x");
    }

    #[test]
    fn creating_again_is_idempotent_but_a_different_request_is_refused() {
        let (_tmp, s) = store();
        let first = s.create_volume("pvc-1", 100, None).unwrap();
        write(&s.volume_dir("pvc-1"), "keep", "me");
        assert_eq!(s.create_volume("pvc-1", 100, None).unwrap(), first);
        assert_eq!(
            read(&s.volume_dir("pvc-1"), "keep"),
            "me",
            "retry kept the data"
        );
        assert!(matches!(
            s.create_volume("pvc-1", 200, None),
            Err(StoreError::AlreadyExists(_))
        ));

        let snap = s.create_snapshot("snap-1", "pvc-1").unwrap();
        assert_eq!(s.create_snapshot("snap-1", "pvc-1").unwrap(), snap);
        s.create_volume("pvc-2", 100, None).unwrap();
        assert!(matches!(
            s.create_snapshot("snap-1", "pvc-2"),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn missing_sources_and_bad_names_are_refused_without_leftovers() {
        let (_tmp, s) = store();
        assert!(matches!(
            s.create_volume("pvc-1", 1, Some(Source::Snapshot("nope".into()))),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.create_snapshot("snap", "no-such-volume"),
            Err(StoreError::NotFound(_))
        ));
        for name in ["", "../escape", ".hidden", "x.snap", "a/b"] {
            assert!(
                matches!(
                    s.create_volume(name, 1, None),
                    Err(StoreError::InvalidName(_))
                ),
                "{name:?}"
            );
        }
        assert_eq!(fs::read_dir(&s.root).unwrap().count(), 0);
    }

    #[test]
    fn deleting_twice_succeeds_and_removes_the_data() {
        let (_tmp, s) = store();
        s.create_volume("pvc-1", 1, None).unwrap();
        s.delete_volume("pvc-1").unwrap();
        s.delete_volume("pvc-1").unwrap();
        assert!(!s.volume_dir("pvc-1").exists());
        assert_eq!(s.volume("pvc-1").unwrap(), None);
        s.delete_snapshot("never-made").unwrap();
    }

    #[test]
    fn snapshots_are_listed_in_id_order_and_survive_a_restart() {
        let (tmp, s) = store();
        s.create_volume("v", 1, None).unwrap();
        for id in ["snap-b", "snap-a", "snap-c"] {
            s.create_snapshot(id, "v").unwrap();
        }
        // A copy interrupted by a crash is cleaned up when the driver starts again.
        fs::create_dir(tmp.path().join("state/.tmp-half")).unwrap();
        let s = Store::open(tmp.path().join("state")).unwrap();
        assert!(!tmp.path().join("state/.tmp-half").exists());
        let ids: Vec<_> = s.snapshots().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["snap-a", "snap-b", "snap-c"]);
    }
}
