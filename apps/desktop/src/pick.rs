//! "Open…": the desktop's own file chooser, run as a program (`zenity`, else `kdialog`)
//! so the app links no GUI toolkit. Without either, the user types the path or drops the
//! file on the window.

use std::path::PathBuf;
use std::process::Command;

/// Ask the user for a `.gguf` file. `Ok(None)` when the dialog was cancelled.
pub fn pick_gguf() -> Result<Option<PathBuf>, String> {
    let tries: [(&str, &[&str]); 2] = [
        (
            "zenity",
            &[
                "--file-selection",
                "--title=Open a GGUF model",
                "--file-filter=GGUF models | *.gguf",
                "--file-filter=All files | *",
            ],
        ),
        ("kdialog", &["--getopenfilename", ".", "*.gguf|GGUF models"]),
    ];
    for (prog, args) in tries {
        match Command::new(prog).args(args).output() {
            Ok(out) => {
                // Both exit 1 when the user cancels.
                if !out.status.success() {
                    return Ok(None);
                }
                let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Ok((!path.is_empty()).then(|| PathBuf::from(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("could not run {prog}: {e}")),
        }
    }
    Err("no file chooser found (install zenity or kdialog); type the path into the model field or drop the file on the window".into())
}
