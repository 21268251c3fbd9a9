//! Compiles the C tests (`tests/c/test_api.c`) and the example (`examples/generate.c`) with
//! the system C compiler against the library cargo built for this test run, and runs them
//! on the real default model. The C program prints its checks and "N passed, M failed".

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding libsuanpan_c.{so,a} built alongside this test binary.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for d in [deps.parent().unwrap(), deps] {
        if d.join("libsuanpan_c.so").is_file() || d.join("libsuanpan_c.dylib").is_file() {
            return d.to_path_buf();
        }
    }
    panic!("libsuanpan_c.so not found next to {}", exe.display());
}

fn model_path() -> PathBuf {
    let p = suanpan::install::default_model_path();
    assert!(
        p.is_file(),
        "the default model is missing at {}; run scripts/test to install it",
        p.display()
    );
    p
}

fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-api");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Compile `src` into `out`, linking the shared library (or the static one).
fn compile(src: &Path, out: &Path, static_link: bool) {
    let lib = lib_dir();
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-pthread"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(src)
        .arg("-o")
        .arg(out);
    if static_link {
        cmd.arg(lib.join("libsuanpan_c.a"))
            .args(["-lm", "-ldl", "-lpthread"]);
    } else {
        cmd.arg("-L")
            .arg(&lib)
            .arg("-lsuanpan_c")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let o = cmd.output().expect("run the C compiler (cc)");
    assert!(
        o.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The default model with its chat template replaced by `template`, written to `path`.
fn with_template(path: &Path, template: &str) {
    use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
    let f = GgufFile::open(model_path()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        w.add_meta(k, v.clone());
    }
    w.add_meta("tokenizer.chat_template", Value::String(template.into()));
    for t in &f.tensors {
        w.add_tensor(&t.name, &t.dims, t.ty, f.tensor_data(t).to_vec());
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    w.write_to(&mut out).unwrap();
}

#[test]
fn c_tests_pass() {
    let exe = scratch().join("test_api");
    compile(&crate_dir().join("tests/c/test_api.c"), &exe, false);
    // Hostile chat templates from issue 18.
    let doubling = scratch().join("doubling.gguf");
    with_template(
        &doubling,
        "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
    );
    let loops = scratch().join("loops.gguf");
    with_template(
        &loops,
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
    );
    let o = Command::new(&exe)
        .arg(model_path())
        .arg(scratch())
        .arg(&doubling)
        .arg(&loops)
        .env_remove("SUANPAN_C_DEBUG_PANIC")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&doubling);
    let _ = std::fs::remove_file(&loops);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stdout}");
    assert!(
        o.status.success(),
        "C tests failed ({}):\n{stdout}\n{stderr}",
        o.status
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

/// The example, linked statically, streams a completion.
#[test]
fn c_example_runs_statically_linked() {
    let exe = scratch().join("generate");
    compile(&crate_dir().join("examples/generate.c"), &exe, true);
    let o = Command::new(&exe)
        .arg(model_path())
        .arg("The capital of France is")
        .arg("8")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "example failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("Paris"), "{stdout}");
}
