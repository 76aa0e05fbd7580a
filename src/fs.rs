//! Durable file-system steps: every atomic writer of the library (shards,
//! manifest, shardify's journal and reject list, checkpoints, the cut-back
//! training log) replaces its file or folder through here.
//!
//! The pattern: write under a temporary name beside the target, sync it,
//! rename it over the target, sync the parent folder. A crash at any point
//! leaves either the old content or the new, never a mix; after the
//! function returns, the new content survives a power loss.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::IoError;

/// The folder holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a file's or a folder's content and metadata to disk.
pub fn sync(path: &Path) -> Result<(), IoError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(IoError::at(path))
}

/// Renames `from` to `to` (same folder tree, same file system) and syncs
/// the folder holding `to`, so the rename survives a crash.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), IoError> {
    std::fs::rename(from, to).map_err(IoError::at(to))?;
    sync(parent(to))
}

/// The temporary name used for `path` while it is being written:
/// `.NAME.tmp` beside it. (A path without a file name, such as `/` or
/// `..`, gets `..tmp` beside it, which no writer here ever asks for.)
pub fn temporary_name(path: &Path) -> std::path::PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    parent(path).join(name)
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = temporary_name(path);
    let mut f = File::create(&tmp).map_err(IoError::at(&tmp))?;
    f.write_all(bytes).map_err(IoError::at(&tmp))?;
    f.sync_all().map_err(IoError::at(&tmp))?;
    drop(f);
    rename_durably(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a.json");
        let e = write_atomically(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
