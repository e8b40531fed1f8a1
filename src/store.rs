//! Certificate and account storage, certbot-compatible.
//!
//! Everything lives under one root directory (see [`Store::default_root`]):
//!
//! ```text
//! ROOT/
//!   accounts/<host>_<port>/<url path, '/' -> '_'>/account.json   0600
//!   archive/NAME/{cert,chain,fullchain,privkey}N.pem             privkey 0600, others 0644
//!   live/NAME/{cert,chain,fullchain,privkey}.pem                 -> ../../archive/NAME/<file>N.pem
//!   renewal/NAME.json                                            0600, settings for renewal
//!   locks/NAME.lock                                              per-certificate flock
//! ```
//!
//! Directories the store creates are 0700. Every file is written atomically (temporary
//! file in the same directory, `fsync`, mode set, rename, `fsync` of the directory), and
//! the live links are switched only after all four archive files of a new version are on
//! disk, so a failure or crash at any point leaves the last good certificate in place.
//! Links left pointing at different versions by a crash mid-switch are rolled forward by
//! [`Store::current`] and [`Store::save_certificate`].

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tempfile::{Builder, NamedTempFile};
use tracing::warn;

/// Mode of every directory the store creates.
const DIR_MODE: u32 = 0o700;
/// Mode of private keys, account keys and settings.
const SECRET_MODE: u32 = 0o600;
/// Mode of certificates.
const PUBLIC_MODE: u32 = 0o644;
/// Longest accepted certificate name.
const MAX_NAME_LEN: usize = 200;

/// Errors from the certificate and account store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read" or "create directory".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another run holds the lock for this certificate.
    #[error(
        "another acme-bridge run holds the lock for certificate {name} ({}); wait for it to finish",
        lock_path.display()
    )]
    Locked {
        /// The certificate name.
        name: String,
        /// The lock file.
        lock_path: PathBuf,
    },
    /// A certificate name that cannot be used as a file name.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The stored state is inconsistent and cannot be repaired automatically.
    #[error("storage is inconsistent at {}: {detail}", path.display())]
    Corrupt {
        /// Where the problem was found.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A JSON file could not be encoded or decoded.
    #[error("invalid JSON in {}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Builds a closure turning an [`io::Error`] into [`StoreError::Io`].
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A validated certificate name, safe to use as a file name.
///
/// Allowed: 1 to 200 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`,
/// not containing `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertName(String);

impl CertName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<CertName, StoreError> {
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("must be at most 200 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("may contain only letters, digits, '.', '_' and '-'")
        } else if name.starts_with(['.', '-']) {
            Some("must not start with '.' or '-'")
        } else if name.contains("..") {
            Some("must not contain \"..\"")
        } else {
            None
        };
        match reason {
            None => Ok(CertName(name.to_owned())),
            Some(reason) => Err(StoreError::InvalidName {
                name: name.to_owned(),
                reason,
            }),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CertName {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CertName::new(s)
    }
}

/// The PEM contents of one certificate version, as passed to [`Store::save_certificate`].
#[derive(Clone, Copy)]
pub struct CertificateFiles<'a> {
    /// The leaf certificate.
    pub cert_pem: &'a str,
    /// The intermediate certificates.
    pub chain_pem: &'a str,
    /// The leaf followed by the intermediates.
    pub fullchain_pem: &'a str,
    /// The private key.
    pub key_pem: &'a str,
}

impl fmt::Debug for CertificateFiles<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateFiles")
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .field("fullchain_pem", &self.fullchain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A stored certificate version, as seen through its live links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The certificate name.
    pub name: CertName,
    /// The archive version the live links point at (1 for the first issuance).
    pub version: u32,
    /// `ROOT/live/NAME`.
    pub live_dir: PathBuf,
    /// `live_dir/cert.pem`.
    pub cert: PathBuf,
    /// `live_dir/chain.pem`.
    pub chain: PathBuf,
    /// `live_dir/fullchain.pem`.
    pub fullchain: PathBuf,
    /// `live_dir/privkey.pem`.
    pub privkey: PathBuf,
}

/// An exclusive lock on one certificate, held until dropped.
#[derive(Debug)]
pub struct CertLock {
    name: CertName,
    // Never read: holding the open file holds the flock.
    #[allow(dead_code)]
    file: File,
}

impl CertLock {
    /// The locked certificate.
    pub fn name(&self) -> &CertName {
        &self.name
    }
}

/// The four files of a certificate version, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Privkey,
    Cert,
    Chain,
    Fullchain,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Privkey, Kind::Cert, Kind::Chain, Kind::Fullchain];

    fn stem(self) -> &'static str {
        match self {
            Kind::Privkey => "privkey",
            Kind::Cert => "cert",
            Kind::Chain => "chain",
            Kind::Fullchain => "fullchain",
        }
    }

    fn mode(self) -> u32 {
        match self {
            Kind::Privkey => SECRET_MODE,
            _ => PUBLIC_MODE,
        }
    }

    fn contents<'a>(self, files: &CertificateFiles<'a>) -> &'a str {
        match self {
            Kind::Privkey => files.key_pem,
            Kind::Cert => files.cert_pem,
            Kind::Chain => files.chain_pem,
            Kind::Fullchain => files.fullchain_pem,
        }
    }

    fn live_name(self) -> String {
        format!("{}.pem", self.stem())
    }

    fn archive_name(self, version: u32) -> String {
        format!("{}{version}.pem", self.stem())
    }

    /// Parses `<stem>N.pem` into its kind and version.
    fn parse_archive_name(file_name: &str) -> Option<(Kind, u32)> {
        Kind::ALL.into_iter().find_map(|kind| {
            let digits = file_name.strip_prefix(kind.stem())?.strip_suffix(".pem")?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((kind, digits.parse().ok()?))
        })
    }
}

/// The certificate and account store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The default root: `/etc/acme-bridge` when running as root, else
    /// `$XDG_CONFIG_HOME/acme-bridge`, else `$HOME/.config/acme-bridge`
    /// (`.acme-bridge` in the current directory when neither is set).
    pub fn default_root() -> PathBuf {
        root_for(
            effective_uid(),
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Opens the store at `root`, creating it with mode 0700 if it does not exist.
    /// An existing directory is used as is.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        let root = std::path::absolute(&root).map_err(io_err("resolve", &root))?;
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&root)
            .map_err(io_err("create directory", &root))?;
        Ok(Store { root })
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the account for an ACME directory URL:
    /// `accounts/<host>_<port>/<path>`, the port defaulting to 443 for https (80 for
    /// http), the path's `/` replaced by `_` (`_` when empty). Every component is
    /// sanitised to `[A-Za-z0-9._-]`, so the result always stays inside `accounts/`.
    pub fn account_dir(&self, directory_url: &str) -> PathBuf {
        let (server, path) = account_components(directory_url);
        self.root.join("accounts").join(server).join(path)
    }

    /// Loads the account saved for `directory_url`, `None` if there is none.
    pub fn load_account<T: DeserializeOwned>(
        &self,
        directory_url: &str,
    ) -> Result<Option<T>, StoreError> {
        read_json(&self.account_dir(directory_url).join("account.json"))
    }

    /// Saves the account for `directory_url` (mode 0600), returning the file's path.
    pub fn save_account<T: Serialize>(
        &self,
        directory_url: &str,
        account: &T,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.account_dir(directory_url);
        let accounts = self.root.join("accounts");
        ensure_dir(&accounts)?;
        ensure_dir(dir.parent().unwrap_or(&accounts))?;
        ensure_dir(&dir)?;
        let path = dir.join("account.json");
        write_json(&path, account)?;
        Ok(path)
    }

    /// Takes the lock for `name` (`locks/NAME.lock`), failing at once with
    /// [`StoreError::Locked`] if another run (or another lock in this process) holds it.
    pub fn lock(&self, name: &CertName) -> Result<CertLock, StoreError> {
        let locks = self.root.join("locks");
        ensure_dir(&locks)?;
        let lock_path = locks.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SECRET_MODE)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match file.try_lock() {
            Ok(()) => Ok(CertLock {
                name: name.clone(),
                file,
            }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
                name: name.to_string(),
                lock_path,
            }),
            Err(TryLockError::Error(source)) => Err(StoreError::Io {
                op: "lock",
                path: lock_path,
                source,
            }),
        }
    }

    /// `ROOT/live/NAME`.
    pub fn live_dir(&self, name: &CertName) -> PathBuf {
        self.root.join("live").join(name.as_str())
    }

    /// `ROOT/archive/NAME`.
    pub fn archive_dir(&self, name: &CertName) -> PathBuf {
        self.root.join("archive").join(name.as_str())
    }

    /// `ROOT/renewal/NAME.json`.
    pub fn renewal_path(&self, name: &CertName) -> PathBuf {
        self.root.join("renewal").join(format!("{name}.json"))
    }

    /// The live version of `name`, after repairing links left inconsistent by a crash;
    /// `None` if it was never issued.
    ///
    /// The repair does not need the lock: it only ever moves all links to the same
    /// complete version, so it converges with a concurrent [`Store::save_certificate`].
    pub fn current(&self, name: &CertName) -> Result<Option<Lineage>, StoreError> {
        Ok(self
            .repair(name)?
            .map(|version| self.lineage(name, version)))
    }

    /// Stores a new version of the locked certificate: writes
    /// `archive/NAME/{privkey,cert,chain,fullchain}N.pem` with `N` one above the highest
    /// number present, then points the live links at it. On error the previous live
    /// version is left in place. `lock` must come from [`Store::lock`] on this store.
    pub fn save_certificate(
        &self,
        lock: &CertLock,
        files: &CertificateFiles<'_>,
    ) -> Result<Lineage, StoreError> {
        let name = lock.name();
        let archive = self.archive_dir(name);
        let live = self.live_dir(name);
        ensure_dir(&self.root.join("archive"))?;
        ensure_dir(&archive)?;
        ensure_dir(&self.root.join("live"))?;

        let previous = match self.repair(name) {
            Ok(previous) => previous,
            Err(StoreError::Corrupt { path, detail }) => {
                warn!(
                    "replacing the unusable live links of {name} ({}: {detail})",
                    path.display()
                );
                None
            }
            Err(e) => return Err(e),
        };

        let version = next_version(&archive)?;
        for kind in Kind::ALL {
            let path = archive.join(kind.archive_name(version));
            fail_point(Step::Archive(kind)).map_err(io_err("write", &path))?;
            write_atomic(&path, kind.contents(files).as_bytes(), kind.mode())?;
        }
        sync_dir(&archive)?;

        if exists(&live)? {
            self.switch_links(name, version, previous)?;
        } else {
            self.create_live_dir(name, version)?;
        }
        sync_dir(&live)?;
        Ok(self.lineage(name, version))
    }

    /// Saves the renewal settings of the locked certificate (`renewal/NAME.json`, 0600).
    pub fn save_settings<T: Serialize>(
        &self,
        lock: &CertLock,
        settings: &T,
    ) -> Result<(), StoreError> {
        ensure_dir(&self.root.join("renewal"))?;
        write_json(&self.renewal_path(lock.name()), settings)
    }

    /// Loads the renewal settings of `name`, `None` if there are none.
    pub fn load_settings<T: DeserializeOwned>(
        &self,
        name: &CertName,
    ) -> Result<Option<T>, StoreError> {
        read_json(&self.renewal_path(name))
    }

    /// `orders/NAME.json`: the pending order of a two-step run.
    pub fn order_path(&self, name: &CertName) -> PathBuf {
        self.root.join("orders").join(format!("{name}.json"))
    }

    /// Saves the pending order of a two-step run for the locked certificate (0600).
    pub fn save_order<T: Serialize>(&self, lock: &CertLock, order: &T) -> Result<(), StoreError> {
        ensure_dir(&self.root.join("orders"))?;
        write_json(&self.order_path(lock.name()), order)
    }

    /// Loads the pending order of `name`, `None` if there is none.
    pub fn load_order<T: DeserializeOwned>(
        &self,
        name: &CertName,
    ) -> Result<Option<T>, StoreError> {
        read_json(&self.order_path(name))
    }

    /// Forgets the pending order of the locked certificate (finished or replaced).
    pub fn remove_order(&self, lock: &CertLock) -> Result<(), StoreError> {
        let path = self.order_path(lock.name());
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root.join("orders")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Every certificate with a live directory, sorted.
    pub fn names(&self) -> Result<Vec<CertName>, StoreError> {
        let live = self.root.join("live");
        let entries = match fs::read_dir(&live) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &live)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &live))?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|s| CertName::new(s).ok())
            else {
                continue;
            };
            if entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn lineage(&self, name: &CertName, version: u32) -> Lineage {
        let live_dir = self.live_dir(name);
        let path = |kind: Kind| live_dir.join(kind.live_name());
        Lineage {
            name: name.clone(),
            version,
            cert: path(Kind::Cert),
            chain: path(Kind::Chain),
            fullchain: path(Kind::Fullchain),
            privkey: path(Kind::Privkey),
            live_dir,
        }
    }

    /// Which archive version the live link of `kind` points at; `None` if the link is
    /// missing or is not the link this store would have made.
    fn link_version(&self, name: &CertName, kind: Kind) -> Result<Option<u32>, StoreError> {
        let link = self.live_dir(name).join(kind.live_name());
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(io_err("read link", &link)(e)),
        };
        let version = target
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(Kind::parse_archive_name)
            .filter(|&(k, v)| k == kind && target == link_target(name, kind, v))
            .map(|(_, v)| v);
        Ok(version)
    }

    /// Whether all four archive files of `version` exist.
    fn complete(&self, name: &CertName, version: u32) -> bool {
        let archive = self.archive_dir(name);
        Kind::ALL
            .into_iter()
            .all(|kind| archive.join(kind.archive_name(version)).is_file())
    }

    /// Makes the live links agree, returning the live version (`None` if there is no
    /// live directory). Links that disagree are rolled forward to the highest complete
    /// version at least one of them points at.
    fn repair(&self, name: &CertName) -> Result<Option<u32>, StoreError> {
        let live = self.live_dir(name);
        if !exists(&live)? {
            return Ok(None);
        }
        let mut versions = [None; 4];
        for (slot, kind) in versions.iter_mut().zip(Kind::ALL) {
            *slot = self.link_version(name, kind)?;
        }
        let mut candidates: Vec<u32> = versions.iter().flatten().copied().collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup();
        let Some(chosen) = candidates.into_iter().find(|&v| self.complete(name, v)) else {
            let links: Vec<String> = Kind::ALL
                .iter()
                .zip(versions)
                .map(|(kind, v)| match v {
                    Some(v) => format!("{} -> version {v}", kind.live_name()),
                    None => format!("{} missing or foreign", kind.live_name()),
                })
                .collect();
            return Err(StoreError::Corrupt {
                path: live,
                detail: format!(
                    "no complete archive version is linked ({})",
                    links.join(", ")
                ),
            });
        };
        if versions.iter().all(|&v| v == Some(chosen)) {
            return Ok(Some(chosen));
        }
        warn!(
            "live links of {name} disagreed ({versions:?} for privkey, cert, chain, \
             fullchain); rolling them to version {chosen}"
        );
        for (kind, v) in Kind::ALL.into_iter().zip(versions) {
            if v != Some(chosen) {
                replace_link(&live, kind, &link_target(name, kind, chosen))?;
            }
        }
        sync_dir(&live)?;
        Ok(Some(chosen))
    }

    /// Points the existing live links at `version`; on failure puts the links already
    /// switched back to `previous`.
    fn switch_links(
        &self,
        name: &CertName,
        version: u32,
        previous: Option<u32>,
    ) -> Result<(), StoreError> {
        let live = self.live_dir(name);
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let switched = fail_point(Step::Link(kind))
                .map_err(io_err("replace link", &live.join(kind.live_name())))
                .and_then(|()| replace_link(&live, kind, &link_target(name, kind, version)));
            if let Err(e) = switched {
                if let Some(previous) = previous {
                    for kind in &Kind::ALL[..i] {
                        let restored =
                            replace_link(&live, *kind, &link_target(name, *kind, previous));
                        if let Err(undo) = restored {
                            warn!("could not restore a live link of {name}: {undo}");
                        }
                    }
                    // Best effort: the error being returned is the one that matters.
                    let _ = sync_dir(&live);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// First issuance: builds the live directory under a temporary name and renames it
    /// into place, so `live/NAME` never exists without its four links.
    fn create_live_dir(&self, name: &CertName, version: u32) -> Result<(), StoreError> {
        let live_root = self.root.join("live");
        let live = self.live_dir(name);
        let tmp = Builder::new()
            .prefix(".tmp-")
            .permissions(Permissions::from_mode(DIR_MODE))
            .tempdir_in(&live_root)
            .map_err(io_err("create directory in", &live_root))?;
        for kind in Kind::ALL {
            let link = tmp.path().join(kind.live_name());
            fail_point(Step::Link(kind)).map_err(io_err("create link", &link))?;
            symlink(link_target(name, kind, version), &link)
                .map_err(io_err("create link", &link))?;
        }
        sync_dir(tmp.path())?;
        fs::rename(tmp.path(), &live).map_err(io_err("rename directory to", &live))?;
        let _ = tmp.keep();
        sync_dir(&live_root)
    }
}

/// The relative link target `../../archive/NAME/<stem>N.pem`.
fn link_target(name: &CertName, kind: Kind, version: u32) -> PathBuf {
    Path::new("../../archive")
        .join(name.as_str())
        .join(kind.archive_name(version))
}

/// One above the highest version with any file in `archive`, so numbers are never
/// reused even after an incomplete version.
fn next_version(archive: &Path) -> Result<u32, StoreError> {
    let mut highest = 0;
    for entry in fs::read_dir(archive).map_err(io_err("list", archive))? {
        let entry = entry.map_err(io_err("list", archive))?;
        if let Some((_, v)) = entry
            .file_name()
            .to_str()
            .and_then(Kind::parse_archive_name)
        {
            highest = highest.max(v);
        }
    }
    highest.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        path: archive.to_path_buf(),
        detail: "archive version numbers are exhausted".into(),
    })
}

/// Steps of [`Store::save_certificate`] at which tests can inject a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Archive(Kind),
    Link(Kind),
}

#[cfg(not(test))]
fn fail_point(_step: Step) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
fn fail_point(step: Step) -> io::Result<()> {
    if tests::FAIL_AT.get() == Some(step) {
        Err(io::Error::from(io::ErrorKind::StorageFull))
    } else {
        Ok(())
    }
}

/// Whether `path` exists (without following a final symlink).
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// Creates `dir` with mode 0700 unless it exists; a new entry is made durable by
/// syncing the parent.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

/// Flushes a directory's entries to disk.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Writes `path` atomically with `mode`; the caller syncs the directory.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // NamedTempFile creates the file 0600, so it is never wider than `mode` allows.
    let mut tmp = NamedTempFile::new_in(dir).map_err(io_err("create a file in", dir))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("rename a file to", path)(e.error))?;
    Ok(())
}

/// Atomically replaces the live link of `kind` in `live` by one to `target`.
fn replace_link(live: &Path, kind: Kind, target: &Path) -> Result<(), StoreError> {
    let link = live.join(kind.live_name());
    let tmp = Builder::new()
        .prefix(".tmp-")
        .make_in(live, |tmp| symlink(target, tmp))
        .map_err(io_err("create link", &link))?;
    tmp.persist(&link)
        .map_err(|e| io_err("replace link", &link)(e.error))?;
    Ok(())
}

/// Writes `value` as pretty JSON to `path` (0600, atomic, directory synced).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(path, &json, SECRET_MODE)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads JSON from `path`, `None` if the file does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// The two path components of an account directory: `<host>_<port>` and the URL path.
fn account_components(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // A colon after the last ']' separates the port (IPv6 hosts are bracketed).
    let (host, port) = match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => (&host_port[..i], &host_port[i + 1..]),
        _ => (host_port, ""),
    };
    let port = match (port, scheme.to_ascii_lowercase().as_str()) {
        ("", "http") => "80",
        ("", _) => "443",
        (port, _) => port,
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_start_matches('/').replace('/', "_");
    let server = format!("{}_{port}", host.to_ascii_lowercase());
    (sanitise(&server), sanitise(&path))
}

/// Maps a string to a safe file name: `[A-Za-z0-9._-]` kept, anything else `_`;
/// empty, `.` and `..` become underscores.
fn sanitise(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match out.as_str() {
        "" | "." => "_".into(),
        ".." => "__".into(),
        _ => out,
    }
}

/// The effective uid of this process, from `/proc/self/status` (or the owner of
/// `/proc/self`).
fn effective_uid() -> Option<u32> {
    let from_status = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
    });
    from_status.or_else(|| fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

/// [`Store::default_root`] for the given uid and environment values.
fn root_for(
    euid: Option<u32>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if euid == Some(0) {
        return PathBuf::from("/etc/acme-bridge");
    }
    // XDG: relative values are invalid and must be ignored.
    if let Some(xdg) = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return xdg.join("acme-bridge");
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config/acme-bridge"),
        None => PathBuf::from(".acme-bridge"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    thread_local! {
        /// The step at which `fail_point` fails in the current test thread.
        pub(super) static FAIL_AT: Cell<Option<Step>> = const { Cell::new(None) };
    }

    fn name(s: &str) -> CertName {
        CertName::new(s).unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn pems(tag: &str) -> [String; 4] {
        ["CERT", "CHAIN", "FULLCHAIN", "KEY"].map(|k| format!("{k} {tag}\n"))
    }

    fn files(p: &[String; 4]) -> CertificateFiles<'_> {
        CertificateFiles {
            cert_pem: &p[0],
            chain_pem: &p[1],
            fullchain_pem: &p[2],
            key_pem: &p[3],
        }
    }

    fn save(store: &Store, n: &CertName, tag: &str) -> Result<Lineage, StoreError> {
        let lock = store.lock(n)?;
        store.save_certificate(&lock, &files(&pems(tag)))
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    /// Asserts that every live file reads as version `tag` and links to `version`.
    fn assert_live(store: &Store, n: &CertName, version: u32, tag: &str) {
        let lineage = store.current(n).unwrap().expect("issued");
        assert_eq!(lineage.version, version);
        let p = pems(tag);
        assert_eq!(read(&lineage.cert), p[0]);
        assert_eq!(read(&lineage.chain), p[1]);
        assert_eq!(read(&lineage.fullchain), p[2]);
        assert_eq!(read(&lineage.privkey), p[3]);
        for kind in Kind::ALL {
            let link = lineage.live_dir.join(kind.live_name());
            assert_eq!(fs::read_link(&link).unwrap(), link_target(n, kind, version));
        }
    }

    fn with_failure<R>(step: Step, f: impl FnOnce() -> R) -> R {
        FAIL_AT.set(Some(step));
        let r = f();
        FAIL_AT.set(None);
        r
    }

    fn set_link(store: &Store, n: &CertName, kind: Kind, version: u32) {
        let link = store.live_dir(n).join(kind.live_name());
        fs::remove_file(&link).unwrap();
        symlink(link_target(n, kind, version), &link).unwrap();
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn cert_name_validation() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            ".hidden",
            "-x",
            "a..b",
            "a b",
            "a\0b",
            "é.test",
            "*.example.com",
        ] {
            assert!(
                matches!(CertName::new(bad), Err(StoreError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        for good in ["example.com", "foo_bar-1.example", "a", "x-.y_"] {
            assert_eq!(CertName::new(good).unwrap().as_str(), good);
        }
        assert!(CertName::new(&"a".repeat(200)).is_ok());
        assert!(CertName::new(&"a".repeat(201)).is_err());
        assert_eq!(name("example.com").to_string(), "example.com");
        assert_eq!("a.test".parse::<CertName>().unwrap(), name("a.test"));
        let msg = CertName::new("a/b").unwrap_err().to_string();
        assert!(msg.contains("\"a/b\""), "{msg}");
    }

    #[test]
    fn account_dir_layout() {
        let (_t, store) = store();
        let accounts = store.root().join("accounts");
        assert_eq!(
            store.account_dir("https://127.0.0.1:14000/dir"),
            accounts.join("127.0.0.1_14000/dir")
        );
        assert_eq!(
            store.account_dir("https://acme-v02.api.letsencrypt.org/directory"),
            accounts.join("acme-v02.api.letsencrypt.org_443/directory")
        );
        assert_eq!(
            store.account_dir("https://Example.COM"),
            accounts.join("example.com_443/_")
        );
        assert_eq!(
            store.account_dir("http://ca.test/a/b/"),
            accounts.join("ca.test_80/a_b_")
        );
        assert_eq!(
            store.account_dir("https://user@[::1]:14000/dir?x=1#f"),
            accounts.join("___1__14000/dir")
        );
    }

    #[test]
    fn account_dir_never_escapes() {
        let (_t, store) = store();
        let accounts = store.root().join("accounts");
        for url in [
            "https://x/../../etc",
            "https://x/..",
            "https://x/.",
            "https://../..",
            "https://..:443/..",
            "../../etc",
            "https://x/%2e%2e/%2e%2e",
            "https://a/b\\..\\..\\c",
            "",
        ] {
            let dir = store.account_dir(url);
            let rest = dir.strip_prefix(&accounts).unwrap();
            let parts: Vec<_> = rest.components().collect();
            assert_eq!(parts.len(), 2, "{url:?} -> {}", dir.display());
            for part in parts {
                assert!(
                    matches!(part, std::path::Component::Normal(_)),
                    "{url:?} -> {}",
                    dir.display()
                );
            }
        }
    }

    #[test]
    fn account_round_trip() {
        let (_t, store) = store();
        let url = "https://127.0.0.1:14000/dir";
        assert_eq!(
            store.load_account::<BTreeMap<String, String>>(url).unwrap(),
            None
        );
        let account = BTreeMap::from([("kid".to_string(), "https://ca/acct/1".to_string())]);
        let path = store.save_account(url, &account).unwrap();
        assert_eq!(path, store.account_dir(url).join("account.json"));
        assert_eq!(mode(&path), 0o600);
        for dir in [
            "accounts",
            "accounts/127.0.0.1_14000",
            "accounts/127.0.0.1_14000/dir",
        ] {
            assert_eq!(mode(&store.root().join(dir)), 0o700, "{dir}");
        }
        assert_eq!(store.load_account(url).unwrap(), Some(account.clone()));
        // Overwriting leaves no temporary files behind.
        store.save_account(url, &account).unwrap();
        assert_eq!(dir_entries(&store.account_dir(url)), ["account.json"]);

        fs::write(&path, "{not json").unwrap();
        let err = store
            .load_account::<BTreeMap<String, String>>(url)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Json { path: p, .. } if *p == path),
            "{err}"
        );
    }

    #[test]
    fn first_certificate_layout_and_modes() {
        let (_t, store) = store();
        let n = name("example.com");
        assert_eq!(store.current(&n).unwrap(), None);
        let lineage = save(&store, &n, "v1").unwrap();
        let live = store.root().join("live/example.com");
        assert_eq!(
            lineage,
            Lineage {
                name: n.clone(),
                version: 1,
                cert: live.join("cert.pem"),
                chain: live.join("chain.pem"),
                fullchain: live.join("fullchain.pem"),
                privkey: live.join("privkey.pem"),
                live_dir: live.clone(),
            }
        );
        assert!(lineage.cert.is_absolute());
        assert_live(&store, &n, 1, "v1");
        assert_eq!(
            fs::read_link(live.join("cert.pem")).unwrap(),
            Path::new("../../archive/example.com/cert1.pem")
        );
        let archive = store.archive_dir(&n);
        assert_eq!(
            dir_entries(&archive),
            ["cert1.pem", "chain1.pem", "fullchain1.pem", "privkey1.pem"]
        );
        assert_eq!(
            dir_entries(&live),
            ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
        );
        assert_eq!(dir_entries(&store.root().join("live")), ["example.com"]);
        assert_eq!(mode(&archive.join("privkey1.pem")), 0o600);
        for f in ["cert1.pem", "chain1.pem", "fullchain1.pem"] {
            assert_eq!(mode(&archive.join(f)), 0o644, "{f}");
        }
        for dir in [
            "archive",
            "archive/example.com",
            "live",
            "live/example.com",
            "locks",
        ] {
            assert_eq!(mode(&store.root().join(dir)), 0o700, "{dir}");
        }
        assert_eq!(mode(&store.root().join("locks/example.com.lock")), 0o600);
    }

    #[test]
    fn new_versions_never_reuse_numbers() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        assert_eq!(save(&store, &n, "v2").unwrap().version, 2);
        assert_live(&store, &n, 2, "v2");
        assert_eq!(
            read(&store.archive_dir(&n).join("cert1.pem")),
            pems("v1")[0]
        );

        // Orphans of an incomplete version 5 push the next version to 6.
        fs::write(store.archive_dir(&n).join("privkey5.pem"), "orphan").unwrap();
        assert_eq!(save(&store, &n, "v6").unwrap().version, 6);
        assert_live(&store, &n, 6, "v6");
        assert_eq!(read(&store.archive_dir(&n).join("privkey5.pem")), "orphan");
    }

    #[test]
    fn failed_archive_write_keeps_previous_version() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        // "Disk full" while writing cert2.pem, after privkey2.pem was written.
        let err = with_failure(Step::Archive(Kind::Cert), || save(&store, &n, "v2")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull),
            "{err}"
        );
        assert!(err.to_string().contains("cert2.pem"), "{err}");
        assert_live(&store, &n, 1, "v1");
        assert!(store.archive_dir(&n).join("privkey2.pem").exists());
        // The orphaned number 2 is skipped.
        assert_eq!(save(&store, &n, "v3").unwrap().version, 3);
        assert_live(&store, &n, 3, "v3");
    }

    #[test]
    fn failed_link_switch_restores_previous_version() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        let err = with_failure(Step::Link(Kind::Chain), || save(&store, &n, "v2")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert_live(&store, &n, 1, "v1");
        assert_eq!(
            dir_entries(&store.live_dir(&n)),
            ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
        );
        assert_eq!(save(&store, &n, "v3").unwrap().version, 3);
    }

    #[test]
    fn failed_first_issuance_leaves_nothing_live() {
        let (_t, store) = store();
        let n = name("example.com");
        for step in [Step::Archive(Kind::Fullchain), Step::Link(Kind::Fullchain)] {
            with_failure(step, || save(&store, &n, "x")).unwrap_err();
            assert_eq!(store.current(&n).unwrap(), None);
            assert!(store.names().unwrap().is_empty());
            assert!(dir_entries(&store.root().join("live")).is_empty());
        }
        let lineage = save(&store, &n, "ok").unwrap();
        assert!(lineage.version > 1);
        assert_live(&store, &n, lineage.version, "ok");
    }

    #[test]
    fn current_rolls_mixed_links_forward() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        save(&store, &n, "v2").unwrap();
        // A crash mid-switch from 1 to 2: some links still at 1.
        set_link(&store, &n, Kind::Privkey, 2);
        set_link(&store, &n, Kind::Cert, 2);
        set_link(&store, &n, Kind::Chain, 1);
        set_link(&store, &n, Kind::Fullchain, 1);
        assert_live(&store, &n, 2, "v2");

        // A missing link is recreated too.
        set_link(&store, &n, Kind::Chain, 1);
        fs::remove_file(store.live_dir(&n).join("cert.pem")).unwrap();
        assert_live(&store, &n, 2, "v2");
        assert_eq!(
            dir_entries(&store.live_dir(&n)),
            ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
        );
    }

    #[test]
    fn repair_skips_incomplete_versions() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        save(&store, &n, "v2").unwrap();
        save(&store, &n, "v3").unwrap();
        // Version 3 lost a file; links spread over 1, 2 and 3.
        fs::remove_file(store.archive_dir(&n).join("chain3.pem")).unwrap();
        set_link(&store, &n, Kind::Privkey, 3);
        set_link(&store, &n, Kind::Cert, 1);
        set_link(&store, &n, Kind::Chain, 2);
        set_link(&store, &n, Kind::Fullchain, 1);
        assert_live(&store, &n, 2, "v2");
    }

    #[test]
    fn save_certificate_repairs_first() {
        let (_t, store) = store();
        let n = name("example.com");
        save(&store, &n, "v1").unwrap();
        save(&store, &n, "v2").unwrap();
        set_link(&store, &n, Kind::Cert, 1);
        // A failure before the switch leaves the repaired version 2 live.
        with_failure(Step::Archive(Kind::Privkey), || save(&store, &n, "v3")).unwrap_err();
        for kind in Kind::ALL {
            let link = store.live_dir(&n).join(kind.live_name());
            assert_eq!(fs::read_link(&link).unwrap(), link_target(&n, kind, 2));
        }
        assert_eq!(save(&store, &n, "v3").unwrap().version, 3);
        assert_live(&store, &n, 3, "v3");
    }

    #[test]
    fn corrupt_live_dir() {
        let (_t, store) = store();
        let n = name("example.com");
        // Links into an archive version that does not exist.
        save(&store, &n, "v1").unwrap();
        for kind in Kind::ALL {
            fs::remove_file(store.archive_dir(&n).join(kind.archive_name(1))).unwrap();
        }
        let err = store.current(&n).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if *path == store.live_dir(&n)),
            "{err}"
        );
        // Saving a new version replaces the unusable links.
        assert_eq!(save(&store, &n, "v2").unwrap().version, 1);
        assert_live(&store, &n, 1, "v2");

        // An empty live directory, and links that point elsewhere.
        let m = name("other.test");
        fs::create_dir(store.live_dir(&m)).unwrap();
        assert!(matches!(store.current(&m), Err(StoreError::Corrupt { .. })));
        for kind in Kind::ALL {
            symlink("/etc/passwd", store.live_dir(&m).join(kind.live_name())).unwrap();
        }
        assert!(matches!(store.current(&m), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn lock_is_per_certificate_and_fails_fast() {
        let (_t, store) = store();
        let a = name("a.test");
        let first = store.lock(&a).unwrap();
        assert_eq!(first.name(), &a);
        let err = store.lock(&a).unwrap_err();
        let lock_path = store.root().join("locks/a.test.lock");
        assert!(
            matches!(&err, StoreError::Locked { name, lock_path: p } if name == "a.test" && *p == lock_path),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "another acme-bridge run holds the lock for certificate a.test ({}); \
                 wait for it to finish",
                lock_path.display()
            )
        );
        let other = store.lock(&name("b.test")).unwrap();
        drop(first);
        let again = store.lock(&a).unwrap();
        drop((other, again));
    }

    #[test]
    fn settings_round_trip() {
        let (_t, store) = store();
        let n = name("example.com");
        assert_eq!(store.load_settings::<Vec<String>>(&n).unwrap(), None);
        let lock = store.lock(&n).unwrap();
        let settings = vec!["dns-01".to_string(), "json".to_string()];
        store.save_settings(&lock, &settings).unwrap();
        let path = store.renewal_path(&n);
        assert_eq!(path, store.root().join("renewal/example.com.json"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&store.root().join("renewal")), 0o700);
        assert_eq!(store.load_settings(&n).unwrap(), Some(settings));
        assert_eq!(
            dir_entries(&store.root().join("renewal")),
            ["example.com.json"]
        );
    }

    #[test]
    fn names_lists_live_certificates() {
        let (_t, store) = store();
        assert!(store.names().unwrap().is_empty());
        for n in ["b.test", "a.test", "c.test"] {
            save(&store, &name(n), "x").unwrap();
        }
        let live = store.root().join("live");
        fs::write(live.join("README"), "certbot puts this here").unwrap();
        fs::create_dir(live.join(".tmp-leftover")).unwrap();
        assert_eq!(
            store.names().unwrap(),
            [name("a.test"), name("b.test"), name("c.test")]
        );
    }

    #[test]
    fn open_creates_root_privately_but_keeps_existing_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b/root");
        let store = Store::open(&nested).unwrap();
        assert_eq!(store.root(), nested);
        assert_eq!(mode(&nested), 0o700);

        let existing = tmp.path().join("mine");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, Permissions::from_mode(0o755)).unwrap();
        Store::open(&existing).unwrap();
        assert_eq!(mode(&existing), 0o755);

        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(
            err.to_string().starts_with("could not create directory "),
            "{err}"
        );
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");

        assert!(Store::open(".").unwrap().root().is_absolute());
    }

    #[test]
    fn default_root_choices() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            root_for(Some(0), os("/x"), os("/home/u")),
            Path::new("/etc/acme-bridge")
        );
        assert_eq!(
            root_for(Some(1000), os("/x"), os("/home/u")),
            Path::new("/x/acme-bridge")
        );
        assert_eq!(
            root_for(Some(1000), os("relative"), os("/home/u")),
            Path::new("/home/u/.config/acme-bridge")
        );
        assert_eq!(
            root_for(None, None, os("/home/u")),
            Path::new("/home/u/.config/acme-bridge")
        );
        assert_eq!(
            root_for(Some(1000), os(""), None),
            Path::new(".acme-bridge")
        );
        assert!(effective_uid().is_some());
        assert!(Store::default_root().ends_with("acme-bridge"));
    }

    #[test]
    fn certificate_files_debug_hides_the_key() {
        let p = pems("secret");
        let debug = format!("{:?}", files(&p));
        assert!(!debug.contains("KEY secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
