//! File helpers: atomic writes, key files with owner-only permissions.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::exit::{Class, OrFail, Result};

/// Reads a key file; a missing or unreadable key is a key error.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).or_fail(Class::Key, || {
        format!("cannot read key file {}", path.display())
    })
}

/// Opens an input file and returns it with its length.
pub fn open(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).or_fail(Class::Io, || format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .or_fail(Class::Io, || format!("cannot stat {}", path.display()))?
        .len();
    Ok((file, len))
}

/// A file written under a temporary name and renamed into place on [`Atomic::commit`];
/// dropped without commit, the temporary file is removed.
pub struct Atomic {
    tmp: PathBuf,
    dest: PathBuf,
    writer: BufWriter<File>,
    committed: bool,
}

impl Atomic {
    /// Starts writing `dest` (refusing to replace it unless `force`).
    pub fn create(dest: &Path, force: bool, secret: bool) -> Result<Self> {
        if !force && dest.exists() {
            return Err(crate::exit::Failure::new(
                Class::Io,
                anyhow::anyhow!("{} exists (use --force to replace it)", dest.display()),
            ));
        }
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = dest.with_file_name(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let file = options
            .open(&tmp)
            .or_fail(Class::Io, || format!("cannot create {}", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            writer: BufWriter::with_capacity(256 * 1024, file),
            committed: false,
        })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.writer
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(mut self) -> Result<()> {
        self.writer
            .flush()
            .or_fail(Class::Io, || format!("cannot write {}", self.tmp.display()))?;
        self.writer
            .get_ref()
            .sync_all()
            .or_fail(Class::Io, || format!("cannot sync {}", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.dest).or_fail(Class::Io, || {
            format!("cannot rename into {}", self.dest.display())
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Atomic {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a small file atomically.
pub fn write_small(dest: &Path, bytes: &[u8], force: bool, secret: bool) -> Result<()> {
    let mut file = Atomic::create(dest, force, secret)?;
    file.writer()
        .write_all(bytes)
        .or_fail(Class::Io, || format!("cannot write {}", dest.display()))?;
    file.commit()
}
