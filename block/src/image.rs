//! Opening image files as raw or qcow2, with their backing chains.
//!
//! As in QEMU, the format is probed (qcow2 magic, otherwise raw) only when it is not
//! given, and a qcow2 image's backing file is opened implicitly from its header,
//! read-only, with a relative name resolved against the overlay's directory.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder, Storage,
    StorageOpenOptions,
};

use crate::header::{self, HeaderError};

/// The imago storage driver petrel uses: a host file.
pub type ImageFile = imago::file::File;

/// An opened image of any format, as imago gives it.
pub type ImageAccess = FormatAccess<ImageFile>;

/// The longest backing chain petrel follows (also stops chains that loop).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Errors opening an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file does not exist.
    #[error("Could not open '{0}': No such file or directory")]
    NotFound(PathBuf),
    /// The file may not be opened with the requested access.
    #[error("Could not open '{0}': Permission denied")]
    PermissionDenied(PathBuf),
    /// Any other I/O error opening the file.
    #[error("Could not open '{path}': {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// What the host said.
        source: io::Error,
    },
    /// The qcow2 header is missing, short or invalid.
    #[error("Image '{path}' is not a valid qcow2 image: {source}")]
    BadHeader {
        /// The image file.
        path: PathBuf,
        /// What is wrong with the header.
        source: HeaderError,
    },
    /// imago refused the image's metadata.
    #[error("Image '{path}' is corrupt: {source}")]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// imago's error.
        source: io::Error,
    },
    /// The image is not in the requested format.
    #[error("Image '{path}' is not in {format} format")]
    FormatMismatch {
        /// The image file.
        path: PathBuf,
        /// The format asked for.
        format: ImageFormat,
    },
    /// A format name petrel does not know.
    #[error("Unknown driver '{0}'")]
    UnknownFormat(String),
    /// A feature of the image petrel does not support.
    #[error("Image '{path}': {what} is not supported")]
    Unsupported {
        /// The image file.
        path: PathBuf,
        /// The feature.
        what: String,
    },
    /// The backing file named in an overlay's header does not exist.
    #[error("Could not open backing file '{backing}' of '{image}': No such file or directory")]
    BackingMissing {
        /// The overlay.
        image: PathBuf,
        /// The backing file, resolved.
        backing: PathBuf,
    },
    /// The backing file exists but could not be opened.
    #[error("Could not open backing file of '{image}': {source}")]
    Backing {
        /// The overlay.
        image: PathBuf,
        /// Why the backing file did not open.
        source: Box<ImageError>,
    },
    /// The backing chain is longer than [`MAX_CHAIN_DEPTH`].
    #[error("Backing chain of '{0}' is too deep")]
    ChainTooDeep(PathBuf),
    /// A backing image was given for a format without backing files (QAPI's wording).
    #[error("Parameter 'backing' is unexpected")]
    UnexpectedBacking,
}

/// An image format petrel opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw: the file is the disk.
    Raw,
    /// qcow2 (version 2 or 3).
    Qcow2,
}

impl ImageFormat {
    /// QEMU's driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(ImageError::UnknownFormat(other.to_string())),
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// The image file.
    pub path: PathBuf,
    /// The format; `None` probes it.
    pub format: Option<ImageFormat>,
    /// Open read-only (backing files are always read-only).
    pub read_only: bool,
    /// `cache=none`: bypass the host page cache (O_DIRECT).
    pub direct: bool,
}

impl OpenOptions {
    /// Read-write, probed format, writeback cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OpenOptions {
            path: path.into(),
            format: None,
            read_only: false,
            direct: false,
        }
    }
}

/// What is known about one layer of an image chain when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The image file, as given or as resolved from the overlay's header.
    pub path: PathBuf,
    /// The format it was opened as.
    pub format: ImageFormat,
    /// Whether it was opened read-only.
    pub read_only: bool,
    /// Whether it was opened with O_DIRECT.
    pub direct: bool,
    /// Whether flushes stop at imago's caches and never reach the host (QEMU's
    /// `cache.no-flush`, which temporary snapshot overlays have).
    pub no_flush: bool,
    /// qcow2 cluster size.
    pub cluster_size: Option<u64>,
    /// Whether the image is encrypted (petrel refuses those, so always false when opened).
    pub encrypted: bool,
    /// Backing file name exactly as the header stores it.
    pub backing_filename: Option<String>,
    /// Backing format as the header stores it.
    pub backing_format: Option<String>,
    /// Backing file name resolved against the overlay's directory.
    pub full_backing_filename: Option<PathBuf>,
    /// What QEMU calls `auto_backing_file`: the backing file the header leads to. Once the
    /// backing image is opened from the header it is that image's file name; otherwise (no
    /// backing, or another node linked instead) and after `change-backing-file`, the name as
    /// the header stores it. A backing node whose file name differs means the node's backing
    /// was overridden, which changes how QEMU names the node.
    pub auto_backing_file: Option<String>,
    /// qcow2 format version (2 or 3).
    pub qcow2_version: Option<u32>,
    /// Number of internal snapshots a qcow2 image holds.
    pub snapshots: u32,
}

/// Where a qcow2 layer's backing image comes from (`-blockdev`'s `backing`).
#[derive(Default)]
pub enum BackingSource {
    /// Open the file the header names, and its chain (the default).
    #[default]
    FromHeader,
    /// None: unallocated clusters read as zeroes (`backing: null`).
    None,
    /// This already open image.
    Image(Arc<ImageAccess>),
}

/// An opened image: the top layer, writable or not, and its read-only backing chain.
pub struct Image {
    /// About this layer.
    pub info: LayerInfo,
    /// imago's handle.
    pub access: ImageAccess,
    /// The backing image, if the header names one.
    pub backing: Option<BackingImage>,
}

/// A read-only layer below an overlay, shared with the overlay's qcow2 driver.
pub struct BackingImage {
    /// About this layer.
    pub info: LayerInfo,
    /// imago's handle, also held by the overlay.
    pub access: Arc<ImageAccess>,
    /// The next layer down.
    pub backing: Option<Box<BackingImage>>,
}

/// The parts of an opened layer before it is wrapped.
struct Layer {
    info: LayerInfo,
    access: ImageAccess,
    backing: Option<BackingImage>,
}

/// Maps a host error opening `path` to the error petrel reports.
fn open_error(path: &Path, err: io::Error) -> ImageError {
    match err.kind() {
        io::ErrorKind::NotFound => ImageError::NotFound(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ImageError::PermissionDenied(path.to_path_buf()),
        _ => ImageError::Io {
            path: path.to_path_buf(),
            source: err,
        },
    }
}

/// Resolves a backing file name from `overlay`'s header as QEMU does.
pub fn resolve_backing(overlay: &Path, backing: &str) -> PathBuf {
    let backing = Path::new(backing);
    if backing.is_absolute() {
        return backing.to_path_buf();
    }
    match overlay.parent() {
        Some(dir) => dir.join(backing),
        None => backing.to_path_buf(),
    }
}

/// Allocated size of `path` on the host (QEMU's actual-size).
pub fn actual_size(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| allocated_bytes(&m))
}

/// Bytes a file with metadata `m` occupies on the host: st_blocks counts 512-byte units
/// whatever the file system's block size.
pub fn allocated_bytes(m: &fs::Metadata) -> u64 {
    m.blocks() * 512
}

/// Formats the existing file `path` as an empty qcow2 image of `size` bytes, without a
/// backing file: version 3, 64 KiB clusters and 16-bit refcounts, as `qemu-img create`
/// makes it by default.
pub fn create_qcow2(path: &Path, size: u64) -> io::Result<()> {
    let storage = ImageFile::open(StorageOpenOptions::new().filename(path).write(true))?;
    Qcow2::<ImageFile>::create_builder(storage)
        .size(size)
        .create()
}

/// Opens the image described by `opts`, with its backing chain.
pub fn open(opts: &OpenOptions) -> Result<Image, ImageError> {
    open_with(opts, BackingSource::FromHeader)
}

/// Opens the image described by `opts` over the backing image `backing` says.
///
/// Only with [`BackingSource::FromHeader`] does [`Image::backing`] hold the layers
/// opened; a raw image refuses [`BackingSource::Image`].
pub fn open_with(opts: &OpenOptions, backing: BackingSource) -> Result<Image, ImageError> {
    let layer = open_layer(opts, 0, backing)?;
    Ok(Image {
        info: layer.info,
        access: layer.access,
        backing: layer.backing,
    })
}

/// Opens one layer and, recursively, the layers below it.
fn open_layer(
    opts: &OpenOptions,
    depth: usize,
    source: BackingSource,
) -> Result<Layer, ImageError> {
    let path = opts.path.as_path();
    if depth > MAX_CHAIN_DEPTH {
        return Err(ImageError::ChainTooDeep(path.to_path_buf()));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(!opts.read_only)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let bad_header = |source| ImageError::BadHeader {
        path: path.to_path_buf(),
        source,
    };
    let format = match opts.format {
        Some(format) => format,
        None if header::probe_qcow2(&file).map_err(bad_header)? => ImageFormat::Qcow2,
        None => ImageFormat::Raw,
    };
    let qcow2_header = match format {
        ImageFormat::Raw => None,
        ImageFormat::Qcow2 => match header::read_qcow2_header(&file) {
            Ok(h) => Some(h),
            Err(HeaderError::BadMagic) => {
                return Err(ImageError::FormatMismatch {
                    path: path.to_path_buf(),
                    format,
                })
            }
            Err(e) => return Err(bad_header(e)),
        },
    };
    drop(file);
    if qcow2_header.is_some_and(|h| h.crypt_method != 0) {
        return Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            what: "encryption".into(),
        });
    }

    let storage_opts = StorageOpenOptions::new().direct(opts.direct);
    let storage = ImageFile::open(storage_opts.clone().filename(path).write(!opts.read_only))
        .map_err(|e| open_error(path, e))?;
    let corrupt = |source| ImageError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let mut info = LayerInfo {
        path: path.to_path_buf(),
        format,
        read_only: opts.read_only,
        direct: opts.direct,
        no_flush: false,
        cluster_size: qcow2_header.map(|h| h.cluster_size()),
        encrypted: false,
        backing_filename: None,
        backing_format: None,
        full_backing_filename: None,
        auto_backing_file: None,
        qcow2_version: qcow2_header.map(|h| h.version),
        snapshots: qcow2_header.map_or(0, |h| h.nb_snapshots),
    };

    let (access, backing) = match format {
        ImageFormat::Raw if matches!(source, BackingSource::Image(_)) => {
            return Err(ImageError::UnexpectedBacking)
        }
        ImageFormat::Raw => {
            let raw = Raw::builder(storage)
                .write(!opts.read_only)
                .storage_open_options(storage_opts)
                .open(DenyImplicitOpenGate::default())
                .map_err(corrupt)?;
            (FormatAccess::new(raw), None)
        }
        ImageFormat::Qcow2 => {
            let mut qcow2 = Qcow2::<ImageFile, Arc<ImageAccess>>::builder(storage)
                .write(!opts.read_only)
                .storage_open_options(storage_opts)
                .backing(None)
                .data_file(None)
                .open(DenyImplicitOpenGate::default())
                .map_err(corrupt)?;
            if qcow2.requires_external_data_file() {
                return Err(ImageError::Unsupported {
                    path: path.to_path_buf(),
                    what: "an external data file".into(),
                });
            }
            info.backing_filename = qcow2.implicit_backing_file().cloned();
            info.auto_backing_file = info.backing_filename.clone();
            info.backing_format = qcow2.implicit_backing_format().cloned();
            info.full_backing_filename = info
                .backing_filename
                .as_deref()
                .map(|name| resolve_backing(path, name));
            let backing = match (source, &info.full_backing_filename) {
                (BackingSource::FromHeader, Some(full)) => {
                    let backing = open_backing(&info, full.clone(), opts.direct, depth)?;
                    qcow2.set_backing(Some(Arc::clone(&backing.access)));
                    info.auto_backing_file = Some(backing.info.path.display().to_string());
                    Some(backing)
                }
                (BackingSource::FromHeader, None) => None,
                (BackingSource::None, _) => {
                    // QEMU reports no backing file name for a node opened without backing.
                    info.backing_filename = None;
                    info.full_backing_filename = None;
                    None
                }
                (BackingSource::Image(image), _) => {
                    qcow2.set_backing(Some(image));
                    None
                }
            };
            (FormatAccess::new(qcow2), backing)
        }
    };
    Ok(Layer {
        info,
        access,
        backing,
    })
}

/// Opens the backing file `full` of the overlay described by `overlay`, read-only.
fn open_backing(
    overlay: &LayerInfo,
    full: PathBuf,
    direct: bool,
    depth: usize,
) -> Result<BackingImage, ImageError> {
    let format = match overlay.backing_format.as_deref() {
        None => None,
        Some("file") => Some(ImageFormat::Raw),
        Some(name) => Some(name.parse().map_err(|_| ImageError::Unsupported {
            path: overlay.path.clone(),
            what: format!("backing format '{name}'"),
        })?),
    };
    let opts = OpenOptions {
        path: full.clone(),
        format,
        read_only: true,
        direct,
    };
    let layer = match open_layer(&opts, depth + 1, BackingSource::FromHeader) {
        Ok(layer) => layer,
        Err(ImageError::NotFound(_)) => {
            return Err(ImageError::BackingMissing {
                image: overlay.path.clone(),
                backing: full,
            })
        }
        Err(e @ (ImageError::BackingMissing { .. } | ImageError::ChainTooDeep(_))) => {
            return Err(e)
        }
        Err(e) => {
            return Err(ImageError::Backing {
                image: overlay.path.clone(),
                source: Box::new(e),
            })
        }
    };
    Ok(BackingImage {
        info: layer.info,
        access: Arc::new(layer.access),
        backing: layer.backing.map(Box::new),
    })
}
