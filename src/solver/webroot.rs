//! Webroot mode: http-01 tokens written as files into a directory an existing web
//! server already serves.
//!
//! [`Webroot`] is the reusable part: it writes and removes the token files and
//! keeps track of what it created, so that removal never touches anything it did
//! not write. [`WebrootSolver`] is `--mode webroot`.
//!
//! `--webroot DIR` is the web server's **document root**, as certbot's
//! `--webroot-path`: the files go to `DIR/.well-known/acme-challenge/TOKEN`, and the
//! two directories below `DIR` are created (0755) when missing. dehydrated's
//! `WELLKNOWN` is the challenge directory itself; [`Webroot::challenge_dir`] writes
//! there directly.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::{Challenge, ChallengeKind, HttpResource};
use crate::error::Error;

/// Mode of a token file: the web server (another user) must read it.
const FILE_MODE: u32 = 0o644;
/// Mode of a directory created on the way to the challenge directory.
const DIR_MODE: u32 = 0o755;
/// The path below a document root where http-01 files live.
const WELL_KNOWN: [&str; 2] = [".well-known", "acme-challenge"];

/// Why a token file could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebrootError {
    /// The configured directory does not exist or is not a directory.
    #[error("{0} is not an existing directory")]
    NotADirectory(PathBuf),
    /// A file name that could leave the challenge directory, or is not a token.
    #[error("refusing to write a challenge file named {0:?}: not a base64url token")]
    BadName(String),
    /// A file already exists under the token's name and was not written by us.
    #[error("{0} already exists and was not written by acme-bridge; not overwriting it")]
    Exists(PathBuf),
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WebrootError {
    let path = path.to_owned();
    move |source| WebrootError::Io { op, path, source }
}

/// A file we wrote, identified by device and inode (and, at removal, its
/// contents: inode numbers are reused) so that a file someone else put in its
/// place is never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    dev: u64,
    ino: u64,
}

/// Writes http-01 token files into a challenge directory and removes exactly
/// those again.
#[derive(Debug)]
pub struct Webroot {
    /// The existing directory we start from (document root, or challenge dir).
    base: PathBuf,
    /// Components below `base` leading to the challenge directory.
    below: &'static [&'static str],
    /// Directories we created, outermost first.
    created: Vec<PathBuf>,
    /// Files we wrote, by path.
    written: BTreeMap<PathBuf, Written>,
}

impl Webroot {
    /// A web server's document root (certbot's `--webroot-path`): files go to
    /// `root/.well-known/acme-challenge/`. `root` must exist.
    pub fn document_root(root: impl Into<PathBuf>) -> Result<Self, WebrootError> {
        Self::new(root.into(), &WELL_KNOWN)
    }

    /// The challenge directory itself (dehydrated's `WELLKNOWN`): files go
    /// directly into `dir`, which must exist.
    pub fn challenge_dir(dir: impl Into<PathBuf>) -> Result<Self, WebrootError> {
        Self::new(dir.into(), &[])
    }

    fn new(base: PathBuf, below: &'static [&'static str]) -> Result<Self, WebrootError> {
        let base = std::path::absolute(&base).unwrap_or(base);
        if !base.is_dir() {
            return Err(WebrootError::NotADirectory(base));
        }
        Ok(Self {
            base,
            below,
            created: Vec::new(),
            written: BTreeMap::new(),
        })
    }

    /// The directory the token files are written to.
    pub fn dir(&self) -> PathBuf {
        self.below.iter().fold(self.base.clone(), |p, c| p.join(c))
    }

    /// Where the file for `http` goes (without writing it).
    pub fn path_for(&self, http: &HttpResource) -> Result<PathBuf, WebrootError> {
        check_name(&http.file_name)?;
        Ok(self.dir().join(&http.file_name))
    }

    /// Checks, without leaving anything behind, that a file can be created in the
    /// deepest directory that exists on the way to the challenge directory.
    pub fn check_writable(&self) -> Result<(), WebrootError> {
        let mut deepest = self.base.clone();
        for component in self.below {
            let next = deepest.join(component);
            if !next.is_dir() {
                break;
            }
            deepest = next;
        }
        tempfile::Builder::new()
            .prefix(".acme-bridge-check")
            .tempfile_in(&deepest)
            .map(drop)
            .map_err(io_err("create a file in", &deepest))
    }

    /// Writes `http.body` to the challenge directory under `http.file_name`,
    /// atomically (temporary file, rename), mode 0644, creating missing
    /// directories (0755). Returns the file's path.
    pub fn write(&mut self, http: &HttpResource) -> Result<PathBuf, WebrootError> {
        let path = self.path_for(http)?;
        let dir = self.ensure_dirs()?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".acme-bridge-")
            .tempfile_in(&dir)
            .map_err(io_err("create a temporary file in", &dir))?;
        tmp.write_all(http.body.as_bytes())
            .and_then(|()| tmp.flush())
            .and_then(|()| {
                tmp.as_file()
                    .set_permissions(Permissions::from_mode(FILE_MODE))
            })
            .map_err(io_err("write", tmp.path()))?;
        let file = if self.written.contains_key(&path) {
            // Ours already (written twice): replace it.
            tmp.persist(&path)
        } else {
            tmp.persist_noclobber(&path)
        }
        .map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                WebrootError::Exists(path.clone())
            } else {
                WebrootError::Io {
                    op: "write",
                    path: path.clone(),
                    source: e.error,
                }
            }
        })?;
        let meta = file.metadata().map_err(io_err("inspect", &path))?;
        self.written.insert(
            path.clone(),
            Written {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        );
        tracing::debug!(path = %path.display(), "challenge file written");
        Ok(path)
    }

    /// Removes the file written for `http`, if we wrote it and it is still the
    /// file we wrote (same inode, same contents); once none of ours is left, removes the directories we
    /// created, if they are empty. Returns whether a file was removed.
    pub fn remove(&mut self, http: &HttpResource) -> Result<bool, WebrootError> {
        let path = self.path_for(http)?;
        let Some(written) = self.written.remove(&path) else {
            // Never written (a failed write may still have created directories).
            if self.written.is_empty() {
                self.remove_created_dirs();
            }
            return Ok(false);
        };
        let removed = match fs::symlink_metadata(&path) {
            Ok(meta)
                if meta.dev() == written.dev
                    && meta.ino() == written.ino
                    && fs::read(&path).is_ok_and(|c| c == http.body.as_bytes()) =>
            {
                match fs::remove_file(&path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => {
                        self.written.insert(path.clone(), written);
                        return Err(io_err("remove", &path)(e));
                    }
                }
            }
            Ok(_) => {
                tracing::warn!(
                    path = %path.display(),
                    "challenge file was replaced by another; leaving it alone"
                );
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                self.written.insert(path.clone(), written);
                return Err(io_err("inspect", &path)(e));
            }
        };
        if removed {
            tracing::debug!(path = %path.display(), "challenge file removed");
        }
        if self.written.is_empty() {
            self.remove_created_dirs();
        }
        Ok(removed)
    }

    /// Creates the missing directories below the base, remembering which.
    fn ensure_dirs(&mut self) -> Result<PathBuf, WebrootError> {
        let mut dir = self.base.clone();
        for component in self.below {
            dir.push(component);
            match DirBuilder::new().mode(DIR_MODE).create(&dir) {
                Ok(()) => {
                    // The umask may have narrowed the mode; the web server must
                    // traverse it.
                    fs::set_permissions(&dir, Permissions::from_mode(DIR_MODE))
                        .map_err(io_err("set the mode of", &dir))?;
                    tracing::debug!(dir = %dir.display(), "directory created");
                    self.created.push(dir.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(io_err("create the directory", &dir)(e)),
            }
        }
        Ok(dir)
    }

    /// Removes the directories we created, innermost first, while they are empty.
    fn remove_created_dirs(&mut self) {
        while let Some(dir) = self.created.pop() {
            if let Err(e) = fs::remove_dir(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(dir = %dir.display(), "directory left in place: {e}");
                    // Its parents are not empty either.
                    self.created.clear();
                }
                continue;
            }
            tracing::debug!(dir = %dir.display(), "directory removed");
        }
    }
}

/// A token is base64url: never empty, never `/`, `\`, `.` or `..`.
fn check_name(name: &str) -> Result<(), WebrootError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(WebrootError::BadName(name.to_owned()))
    }
}

/// `--mode webroot`: writes each http-01 token into a document root served by an
/// existing web server, and removes it at cleanup.
#[derive(Debug)]
pub struct WebrootSolver {
    webroot: Webroot,
    ready: VecDeque<Readiness>,
}

impl WebrootSolver {
    /// Writes below the document root `root` (see the module documentation).
    /// Fails when `root` is not an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let webroot =
            Webroot::document_root(root).map_err(|e| Error::Config(format!("--webroot: {e}")))?;
        Ok(Self {
            webroot,
            ready: VecDeque::new(),
        })
    }
}

impl Solver for WebrootSolver {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        if run.challenge_type != crate::challenge::ChallengeType::Http01 {
            return Err(Error::Config(format!(
                "--mode webroot serves http-01 only, not {} (use --challenge http-01)",
                run.challenge_type
            )));
        }
        self.webroot
            .check_writable()
            .map_err(|e| Error::Config(format!("--webroot: {e}")))
    }

    async fn present(&mut self, challenges: &[Challenge], _: &Deadline) -> Result<(), Error> {
        for challenge in challenges {
            let readiness = match &challenge.kind {
                ChallengeKind::Http01 { http } => match self.webroot.write(http) {
                    Ok(path) => {
                        tracing::info!(
                            "{} ({}): wrote {}",
                            challenge.domain,
                            challenge.id,
                            path.display()
                        );
                        Readiness::Ready(challenge.id.clone())
                    }
                    Err(e) => Readiness::Failed {
                        id: challenge.id.clone(),
                        reason: e.to_string(),
                    },
                },
                _ => Readiness::Failed {
                    id: challenge.id.clone(),
                    reason: format!(
                        "--mode webroot cannot serve a {} challenge",
                        challenge.challenge_type()
                    ),
                },
            };
            self.ready.push_back(readiness);
        }
        Ok(())
    }

    async fn next_ready(&mut self, _: &Deadline) -> Result<Readiness, Error> {
        super::next_queued(&mut self.ready, "webroot")
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        let mut first_error = None;
        for d in done {
            let ChallengeKind::Http01 { http } = &d.challenge.kind else {
                continue;
            };
            match self.webroot.remove(http) {
                Ok(true) => tracing::info!(
                    "{} ({}): removed {} ({:?})",
                    d.challenge.domain,
                    d.challenge.id,
                    self.webroot.dir().join(&http.file_name).display(),
                    d.outcome
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(Error::Internal(format!("webroot cleanup: {e}"))),
            None => Ok(()),
        }
    }

    async fn finish(&mut self, _: Result<&Issued, &Error>) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(token: &str) -> HttpResource {
        HttpResource {
            path: format!("/.well-known/acme-challenge/{token}"),
            url: format!("http://example.com/.well-known/acme-challenge/{token}"),
            body: format!("{token}.thumb"),
            file_name: token.to_owned(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_under_well_known_and_removes_only_what_it_created() {
        let root = tempfile::tempdir().unwrap();
        let mut webroot = Webroot::document_root(root.path()).unwrap();
        let a = webroot.write(&resource("tokA")).unwrap();
        let b = webroot.write(&resource("tokB")).unwrap();
        assert_eq!(a, root.path().join(".well-known/acme-challenge/tokA"));
        assert_eq!(fs::read_to_string(&a).unwrap(), "tokA.thumb");
        assert_eq!(mode(&a), 0o644);
        assert_eq!(mode(&root.path().join(".well-known")), 0o755);
        assert_eq!(mode(&root.path().join(".well-known/acme-challenge")), 0o755);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(webroot.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        assert!(webroot.remove(&resource("tokA")).unwrap());
        assert!(!a.exists());
        assert!(b.exists());
        assert!(
            webroot.dir().is_dir(),
            "directories stay while files remain"
        );
        assert!(webroot.remove(&resource("tokB")).unwrap());
        assert!(!root.path().join(".well-known").exists());
        // Removing twice, or something never written, is a no-op.
        assert!(!webroot.remove(&resource("tokB")).unwrap());
        assert!(!webroot.remove(&resource("never")).unwrap());
    }

    #[test]
    fn existing_directories_and_foreign_files_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".well-known/acme-challenge");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o750)).unwrap();
        fs::write(dir.join("other"), "x").unwrap();
        fs::write(dir.join("taken"), "not ours").unwrap();

        let mut webroot = Webroot::document_root(root.path()).unwrap();
        assert!(matches!(
            webroot.write(&resource("taken")),
            Err(WebrootError::Exists(_))
        ));
        assert_eq!(fs::read_to_string(dir.join("taken")).unwrap(), "not ours");
        assert!(!webroot.remove(&resource("taken")).unwrap());
        assert!(dir.join("taken").exists());

        let path = webroot.write(&resource("mine")).unwrap();
        assert_eq!(mode(&dir), 0o750, "an existing directory keeps its mode");
        // Someone replaces our file: it is not ours any more.
        fs::remove_file(&path).unwrap();
        fs::write(&path, "replaced").unwrap();
        assert!(!webroot.remove(&resource("mine")).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "replaced");
        assert!(dir.join("other").exists());
    }

    #[test]
    fn a_created_directory_that_gained_files_stays() {
        let root = tempfile::tempdir().unwrap();
        let mut webroot = Webroot::document_root(root.path()).unwrap();
        webroot.write(&resource("tok")).unwrap();
        fs::write(root.path().join(".well-known/security.txt"), "x").unwrap();
        assert!(webroot.remove(&resource("tok")).unwrap());
        assert!(!root.path().join(".well-known/acme-challenge").exists());
        assert!(root.path().join(".well-known/security.txt").exists());
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut webroot = Webroot::challenge_dir(root.path()).unwrap();
        for bad in ["", "..", "a/b", "../x", ".hidden", "a\\b", "a b"] {
            assert!(
                matches!(webroot.write(&resource(bad)), Err(WebrootError::BadName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let path = webroot.write(&resource("ok_-9")).unwrap();
        assert_eq!(path, root.path().join("ok_-9"));
        assert!(webroot.remove(&resource("ok_-9")).unwrap());
        assert!(root.path().is_dir(), "the challenge directory itself stays");
    }

    #[test]
    fn a_missing_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            Webroot::document_root(root.path().join("missing")),
            Err(WebrootError::NotADirectory(_))
        ));
    }
}
