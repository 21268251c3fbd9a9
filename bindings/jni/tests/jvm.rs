//! Compiles the Kotlin API (`android/src/main/kotlin`) and its desktop test
//! (`android/src/test/kotlin`) with kotlinc, and runs the test on the JVM against the
//! libsuanpan_jni.so cargo built for this run and the real default model.
//!
//! The same kotlinc run compiles the Android sample's chat logic
//! (`apps/android/app/src/main/java/dev/suanpan/sample/ChatController.kt`, plain Kotlin) with
//! its JVM check (`apps/android/app/src/jvmCheck`), which then runs on the same model: the
//! sample is held to the real API although no Android SDK is here to build the app.
//!
//! kotlinc comes from the npm package `kotlin-compiler` (scripts/test installs it into
//! `$SUANPAN_CACHE/kotlin-compiler`); `$KOTLINC` overrides. Its lib/ folder also holds
//! kotlin-stdlib.jar and kotlinx-coroutines-core-jvm.jar, which the API's Flow uses.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kotlinc() -> PathBuf {
    if let Some(k) = std::env::var_os("KOTLINC") {
        return PathBuf::from(k);
    }
    let k = suanpan::install::cache_dir()
        .join("kotlin-compiler/node_modules/kotlin-compiler/bin/kotlinc");
    assert!(
        k.is_file(),
        "kotlinc not found at {}: run scripts/test (it installs the npm package kotlin-compiler there) or set KOTLINC",
        k.display()
    );
    k
}

fn native_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for d in [deps.parent().unwrap(), deps] {
        let p = d.join("libsuanpan_jni.so");
        if p.is_file() {
            return p;
        }
    }
    panic!("libsuanpan_jni.so not found next to {}", exe.display());
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn jar(lib: &Path, name: &str) -> PathBuf {
    let p = lib.join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

#[test]
fn kotlin_api_on_the_jvm() {
    let kotlinc = kotlinc();
    let klib = kotlinc.parent().unwrap().join("../lib");
    let stdlib = jar(&klib, "kotlin-stdlib.jar");
    let coroutines = jar(&klib, "kotlinx-coroutines-core-jvm.jar");
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jvm");
    std::fs::create_dir_all(&out_dir).unwrap();
    let jar_out = out_dir.join("suanpan-test.jar");
    let android = crate_dir().join("android/src");
    let sample = crate_dir().join("../../apps/android/app/src");
    run(
        Command::new(&kotlinc)
            .arg("-classpath")
            .arg(&coroutines)
            .args(["-jvm-target", "17", "-nowarn", "-d"])
            .arg(&jar_out)
            .arg(android.join("main/kotlin"))
            .arg(android.join("test/kotlin"))
            .arg(sample.join("main/java/dev/suanpan/sample/ChatController.kt"))
            .arg(sample.join("jvmCheck/kotlin")),
        "kotlinc",
    );
    let model = suanpan::install::default_model_path();
    assert!(
        model.is_file(),
        "the default model is missing: run scripts/test"
    );
    let cp = std::env::join_paths([&jar_out, &stdlib, &coroutines]).unwrap();
    // The default model with a chat template that doubles a list 100 times (issue 18).
    let hostile = out_dir.join("hostile.gguf");
    {
        use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
        let f = GgufFile::open(&model).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in &f.metadata {
            w.add_meta(k, v.clone());
        }
        w.add_meta(
            "tokenizer.chat_template",
            Value::String("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}".into()),
        );
        for t in &f.tensors {
            w.add_tensor(&t.name, &t.dims, t.ty, f.tensor_data(t).to_vec());
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(&hostile).unwrap());
        w.write_to(&mut out).unwrap();
    }
    let out = run(
        Command::new("java")
            .arg(format!("-Dsuanpan.library.path={}", native_lib().display()))
            .arg("-cp")
            .arg(&cp)
            .arg("io.suanpan.SuanpanJvmTestKt")
            .arg(&model)
            .arg(out_dir.join("scratch"))
            .arg(&hostile),
        "the JVM test",
    );
    let _ = std::fs::remove_file(&hostile);
    println!("{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    // The Android sample's ChatController: load, two chat turns, Stop, context full, close.
    let out = run(
        Command::new("java")
            .arg(format!("-Dsuanpan.library.path={}", native_lib().display()))
            .arg("-cp")
            .arg(&cp)
            .arg("dev.suanpan.sample.ChatControllerCheckKt")
            .arg(&model),
        "the Android sample's JVM check",
    );
    println!("{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    // ... and without its native library: a message on screen, not a crash.
    let out = run(
        Command::new("java")
            .arg("-Dsuanpan.library.path=/nonexistent/libsuanpan_jni.so")
            .arg("-cp")
            .arg(&cp)
            .arg("dev.suanpan.sample.ChatControllerCheckKt")
            .arg("--no-library"),
        "the Android sample's JVM check without the library",
    );
    let last = out.lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}
