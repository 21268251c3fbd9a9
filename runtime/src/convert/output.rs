//! Where a conversion writes: checks on the output path, and a temporary file next to it
//! that becomes the output only when complete.
//!
//! Rules: the output must not be the input (the same file, also through a link or another
//! hard link), must be a regular file if it exists, and is replaced only with `overwrite`.
//! The data goes to a new, uniquely named file in the output's directory
//! (`.NAME.suanpan-PID-N.tmp`, created exclusively, so no other file is ever truncated)
//! which is renamed over the output at the end; on error, or when dropped, the temporary
//! file is removed. [`remove_temporaries`] removes those of conversions still running (for
//! a Ctrl-C handler). A conversion that was killed outright leaves its file behind; the next
//! conversion to the same output removes those whose process is gone (Linux: no
//! `/proc/PID`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Temporary files of conversions in progress.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether two paths name the same file (both must exist).
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata, pa: &Path, pb: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = (pa, pb);
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        match (pa.canonicalize(), pb.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Refuse an output that is the input, is not a regular file, or exists without
/// `overwrite`.
pub fn check(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let Ok(link) = std::fs::symlink_metadata(output) else {
        return Ok(()); // nothing there: a new file
    };
    let out = match std::fs::metadata(output) {
        Ok(m) => m,
        Err(_) if link.file_type().is_symlink() => {
            return Err(Error::invalid(format!(
                "output {} is a link to nothing; remove it or choose another output",
                output.display()
            )))
        }
        Err(e) => return Err(Error::io(output, e)),
    };
    if let Ok(inp) = std::fs::metadata(input) {
        if same_file(&inp, &out, input, output) {
            return Err(Error::invalid(format!(
                "output {} is the input file; write the conversion to another path",
                output.display()
            )));
        }
    }
    if !out.is_file() {
        return Err(Error::invalid(format!(
            "output {} exists and is not a regular file",
            output.display()
        )));
    }
    if !overwrite {
        return Err(Error::invalid(format!(
            "output {} exists; pass --force (ConvertParams::overwrite) to replace it",
            output.display()
        )));
    }
    Ok(())
}

/// A temporary file that becomes `output` on [`TempOutput::commit`], and is removed if
/// dropped before.
pub struct TempOutput {
    path: PathBuf,
    output: PathBuf,
    file: Option<File>,
}

impl TempOutput {
    /// Create a new temporary file in `output`'s directory.
    pub fn create(output: &Path) -> Result<Self> {
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .ok_or_else(|| Error::invalid(format!("output {} names no file", output.display())))?
            .to_string_lossy()
            .into_owned();
        remove_stale(&dir, &name);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}.suanpan-{}-{n}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    LIVE.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(path.clone());
                    return Ok(TempOutput {
                        path,
                        output: output.to_path_buf(),
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until commit")
    }

    /// Flush the file to disk and rename it to the output.
    pub fn commit(mut self) -> Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| Error::io(&self.path, e))?;
        }
        std::fs::rename(&self.path, &self.output).map_err(|e| Error::io(&self.output, e))?;
        forget(&self.path);
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if forget(&self.path) {
            self.file = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Take `path` off the live list; whether it was on it.
fn forget(path: &Path) -> bool {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    match live.iter().position(|p| p == path) {
        Some(i) => {
            live.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Remove `.NAME.suanpan-PID-N.tmp` files in `dir` left by processes that no longer run.
fn remove_stale(dir: &Path, name: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = format!(".{name}.suanpan-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest
            .strip_suffix(".tmp")
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove the temporary files of conversions still running (call from a Ctrl-C handler
/// before exiting).
pub fn remove_temporaries() {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for p in live {
        let _ = std::fs::remove_file(p);
    }
}
