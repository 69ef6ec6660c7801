//! Temporary snapshot overlays: what `-drive ...,snapshot=on` puts over an image.
//!
//! As QEMU's `bdrv_append_temp_snapshot`: an empty qcow2 image the size of the disk is
//! made in the temporary directory under a `vl.XXXXXX` name, opened with the image's node
//! as its backing layer (its header names no backing file: the link exists only in the
//! graph), and unlinked as soon as it is open, so that it goes when the process does. The
//! guest's writes land in the overlay; the image below, opened read-only, is never
//! written. Like QEMU's, the overlay ignores flushes (`cache.no-flush`): nothing in it
//! outlives the process.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{BackingOption, BlockGraph, BlockNode, NodeError, NodeOptions};
use crate::errno;
use crate::image::{self, ImageFormat, OpenOptions};

/// What `mkstemp` puts in place of `XXXXXX`.
const NAME_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// How many names are tried before giving up, as glib's `g_mkstemp` does.
const NAME_ATTEMPTS: u32 = 100;

/// Why a temporary overlay could not be made, in QEMU's words.
#[derive(Debug, thiserror::Error)]
pub enum TempSnapshotError {
    /// No file could be created in the temporary directory.
    #[error("Could not open temporary file '{}': {}", .path.display(), errno::strerror(*.errno))]
    TempFile {
        /// The last name tried (`DIR/vl.` and six random characters), as QEMU reports it.
        path: PathBuf,
        /// What the host said.
        errno: i32,
    },
    /// The file was created but could not be formatted as qcow2.
    #[error("Could not create temporary overlay '{}': {}", .path.display(), errno::strerror(*.errno))]
    Create {
        /// The overlay file.
        path: PathBuf,
        /// What the host said.
        errno: i32,
    },
}

/// The directory temporary overlays go to, as QEMU chooses it: `$TMPDIR` (through
/// [`std::env::temp_dir`]), except that `/tmp`, the default, becomes `/var/tmp`, since
/// `/tmp` is often a small tmpfs and overlays can grow as large as the disk.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir();
    if dir.as_os_str().is_empty() || dir == Path::new("/tmp") {
        PathBuf::from("/var/tmp")
    } else {
        dir
    }
}

/// Six random characters for a `vl.XXXXXX` name.
fn random_suffix(attempt: u32) -> String {
    let seed = (std::process::id(), attempt, SystemTime::now());
    let mut bits = RandomState::new().hash_one(seed);
    let base = NAME_CHARS.len() as u64;
    (0..6)
        .map(|_| {
            let c = NAME_CHARS[(bits % base) as usize];
            bits /= base;
            char::from(c)
        })
        .collect()
}

/// Creates a new, empty file `vl.XXXXXX` in `dir`, readable and writable by its owner only
/// (`mkstemp`); returns its name and an open handle on it.
fn create_temp_file(dir: &Path) -> Result<(PathBuf, File), TempSnapshotError> {
    let mut attempt = 0;
    loop {
        let path = dir.join(format!("vl.{}", random_suffix(attempt)));
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < NAME_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => {
                return Err(TempSnapshotError::TempFile {
                    path,
                    errno: errno::of_io(&e),
                })
            }
        }
    }
}

impl BlockGraph {
    /// Puts a temporary qcow2 overlay over the format node `base` (which must be read-only)
    /// and returns the overlay's node: the node a backend then uses.
    ///
    /// The overlay is as large as `base`, lives in [`temp_dir`], and is read-only if
    /// `read_only` is set (as QEMU copies `read-only` from the drive). Its file is unlinked
    /// before this returns, whether opening it worked or not; its nodes read the file's
    /// size through an open handle. Both the overlay and its `file` node get generated
    /// names; `base` keeps its own.
    pub fn append_temp_snapshot(
        &mut self,
        base: &str,
        read_only: bool,
    ) -> Result<Arc<BlockNode>, NodeError> {
        let base_node = self
            .get(base)
            .ok_or_else(|| NodeError::NotFound(base.to_string()))?;
        let size = base_node.size();
        let (path, file) = create_temp_file(&temp_dir())?;
        let opened = image::create_qcow2(&path, size)
            .map_err(|e| {
                NodeError::from(TempSnapshotError::Create {
                    path: path.clone(),
                    errno: errno::of_io(&e),
                })
            })
            .and_then(|()| {
                let opts = OpenOptions {
                    path: path.clone(),
                    format: Some(ImageFormat::Qcow2),
                    read_only,
                    direct: false,
                };
                let names = NodeOptions {
                    backing: BackingOption::Node(base.to_string()),
                    ..NodeOptions::default()
                };
                self.open_with_host_file(&opts, &names, Some(Arc::new(file)))
            });
        // The open handles keep the file; its name must not outlive the process. (QEMU
        // ignores a failure here too: the overlay works regardless.)
        let _ = fs::remove_file(&path);
        let overlay = opened?;
        let file_node = overlay.file_child().and_then(|name| self.get(name));
        for node in std::iter::once(&overlay).chain(file_node.as_ref()) {
            node.update_layer(|layer| layer.no_flush = true);
        }
        Ok(overlay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_six_name_characters_and_vary() {
        let names: Vec<String> = (0..8).map(random_suffix).collect();
        for name in &names {
            assert_eq!(name.len(), 6);
            assert!(name.bytes().all(|b| NAME_CHARS.contains(&b)), "{name}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert!(unique.len() > 1, "{names:?}");
    }

    #[test]
    fn temp_file_is_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("petrel-tmpfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, _fa) = create_temp_file(&dir).unwrap();
        let (b, _fb) = create_temp_file(&dir).unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("vl."));
        let mode = fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
        let err = create_temp_file(&dir).unwrap_err().to_string();
        let prefix = format!("Could not open temporary file '{}/vl.", dir.display());
        let rest = err.strip_prefix(&prefix).unwrap_or_else(|| panic!("{err}"));
        assert_eq!(
            rest.len(),
            6 + "': No such file or directory".len(),
            "{err}"
        );
        assert!(rest.ends_with("': No such file or directory"), "{err}");
    }
}
