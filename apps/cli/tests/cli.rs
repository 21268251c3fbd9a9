//! The `suanpan` binary end to end, on the real default model.

use std::process::Command;

fn suanpan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_suanpan"))
}

fn model() -> String {
    let p = suanpan::install::default_model_path();
    assert!(
        p.is_file(),
        "default model missing at {}; run scripts/test",
        p.display()
    );
    p.display().to_string()
}

#[test]
fn run_greedy_prints_only_text_and_stats_on_stderr() {
    let out = suanpan()
        .args([
            "run",
            "-m",
            &model(),
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
            "-t",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tok/s"), "{err}");
    assert!(!text.contains("tok/s"));
}

#[test]
fn chat_one_shot_answers() {
    // With the template's default system prompt this 135M model rambles (llama.cpp too);
    // a plain system prompt makes it answer, which is what this pipeline test needs.
    let out = suanpan()
        .args([
            "chat",
            "-m",
            &model(),
            "--system",
            "You are a helpful assistant.",
            "-p",
            "What is the capital of France?",
            "-n",
            "16",
            "--temp",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert!(!text.contains("<|im_start|>"), "{text:?}");
}

#[test]
fn info_describes_the_model() {
    let out = suanpan().args(["info", &model()]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in ["llama", "30 layers", "576", "Q4_1", "49152"] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
}

/// A file that cannot load: `info` still lists every tensor type, marks those without
/// kernels or with scalar kernels only, and fails with the loader's error (no panic).
#[test]
fn info_names_types_it_cannot_run() {
    use suanpan::format::gguf::{GgufWriter, Value};
    use suanpan::format::GgmlType;
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    w.add_meta("llama.block_count", Value::U32(1));
    w.add_tensor(
        "token_embd.weight",
        &[256, 4],
        GgmlType::Q4K,
        vec![0; 4 * 144],
    );
    w.add_tensor(
        "blk.0.ffn_down.weight",
        &[256, 2],
        GgmlType::Q3K,
        vec![0; 2 * 110],
    );
    w.add_tensor("output_norm.weight", &[256], GgmlType::F32, vec![0; 1024]);
    w.add_tensor("odd.weight", &[4], GgmlType::F64, vec![0; 32]);
    let path = std::env::temp_dir().join(format!("suanpan-kquant-{}.gguf", std::process::id()));
    std::fs::write(&path, w.to_bytes()).unwrap();
    let out = suanpan()
        .args(["info", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Both K-quants run on the GPU too (kquant.wgsl); Q3_K has no SIMD kernel on any CPU.
    for want in [
        "Q4_K×1",
        "Q3_K×1 (scalar CPU kernels)",
        "F64×1 (no kernels yet)",
        "F32×1",
    ] {
        assert!(text.contains(want), "info lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("F32×1 ("), "{text}");
    assert!(!text.contains("CPU only"), "{text}");
    assert!(err.contains("error:"), "{err}");
}

#[test]
fn perplexity_prints_ppl_last() {
    let dir = std::env::temp_dir().join(format!("suanpan-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("text.txt");
    let text = std::fs::read_to_string("/usr/share/common-licenses/Apache-2.0").unwrap();
    std::fs::write(&f, &text[..6000]).unwrap();
    let out = suanpan()
        .args([
            "perplexity",
            "-m",
            &model(),
            "-f",
            f.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let v: f64 = last.strip_prefix("PPL = ").expect(last).parse().unwrap();
    assert!(v > 1.0 && v < 100.0, "{v}");
}

#[test]
fn bad_model_files_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("suanpan-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"this is not a model").unwrap();
    let truncated = dir.join("truncated.gguf");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (path, want) in [
        (dir.join("missing.gguf"), "No such file"),
        (junk, "magic"),
        (truncated, "truncated"),
    ] {
        let out = suanpan()
            .args(["run", "-m", path.to_str().unwrap(), "-p", "hi", "-n", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error:") && err.contains(want),
            "{path:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn quantized_kv_run_and_estimate() {
    let out = suanpan()
        .args([
            "run",
            "-m",
            &model(),
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
            "--kv",
            "q4",
            "--kv-window",
            "0",
            "--kv-sinks",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("KV cache q4"), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text:?}");

    let out = suanpan()
        .args(["estimate", "-m", &model(), "--kv-budget", "32M"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for mode in ["f16", "q8", "q4", "q2"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(mode)),
            "{mode} missing:\n{text}"
        );
    }

    // Decode speed at a given context (the fill, then timed runs ending at --ctx).
    let out = suanpan()
        .args([
            "bench",
            "-m",
            &model(),
            "--ctx",
            "160",
            "--kv",
            "q4",
            "--gen-tokens",
            "4",
            "--reps",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.contains("\"ctx\":160")
            && line.contains("\"fill\":152")
            && line.contains("\"kv\":\"q4\""),
        "{line}"
    );

    // A budget below one token, an unknown mode and a context beyond the trained length are
    // clear errors.
    let m = model();
    for args in [
        vec!["--kv", "q4", "--kv-budget", "1k"],
        vec!["--kv", "q3"],
        vec!["-c", "100000"],
    ] {
        let mut a = vec!["run", "-m", m.as_str(), "-p", "hi", "-n", "1"];
        a.extend(args.iter().copied());
        let out = suanpan().args(&a).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("error"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `suanpan ARGS` to completion; panics with its stderr unless it succeeds.
fn ok_stdout(args: &[&str]) -> String {
    let out = suanpan().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn run_json_streams_the_same_text_as_plain_run() {
    let m = model();
    let args = [
        "run",
        "-m",
        m.as_str(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    let plain = ok_stdout(&args);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = ok_stdout(&json_args);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let kind = |e: &serde_json::Value| e["event"].as_str().unwrap().to_string();
    assert_eq!(kind(&events[0]), "load", "{out}");
    assert!(events[0]["ms"].as_f64().unwrap() > 0.0, "{out}");
    let tokens: Vec<_> = events.iter().filter(|e| kind(e) == "token").collect();
    let text: String = tokens.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(text, plain);
    for (i, e) in tokens.iter().enumerate() {
        assert_eq!(e["index"].as_u64(), Some(i as u64), "{out}");
    }
    let done = events.last().unwrap();
    assert_eq!(kind(done), "done", "{out}");
    assert_eq!(done["generated_tokens"].as_u64(), Some(8), "{out}");
    assert_eq!(done["stop"].as_str(), Some("max_tokens"), "{out}");
    assert_eq!(done["tokens"].as_array().unwrap().len(), 8, "{out}");
    assert!(done["prompt_tokens"].as_u64().unwrap() > 1, "{out}");
    for k in ["prompt_tps", "decode_tps"] {
        assert!(done[k].as_f64().unwrap() > 0.0, "{k}: {out}");
    }

    // A failure is an error event on stdout and a non-zero exit.
    let out = suanpan()
        .args(["run", "--json", "-m", "/nonexistent.gguf", "-p", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error", "{stdout}");
    assert!(
        last["message"].as_str().unwrap().contains("nonexistent"),
        "{stdout}"
    );
}

/// In the chat REPL, Ctrl-C (SIGINT) during a reply stops that reply only: the next
/// message is answered and end of input still ends the chat normally.
#[cfg(unix)]
#[test]
fn chat_ctrl_c_stops_the_reply_not_the_chat() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let mut child = suanpan()
        .args([
            "chat",
            "-m",
            &model(),
            "--system",
            "You are a helpful assistant.",
            "-n",
            "300",
            "--temp",
            "0",
            "-t",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(());
        }
        String::from_utf8(all).unwrap()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });

    writeln!(
        stdin,
        "Write a long story about a brave knight and a dragon."
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(120))
        .expect("no reply within 120 s");
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    writeln!(stdin, "What is the capital of France?").unwrap();
    drop(stdin); // end of input after the second message

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chat did not end within 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("reply stopped"), "{err}");
    // Only the second reply ran to its end (and printed its stats).
    assert_eq!(err.matches("| decode ").count(), 1, "{err}");
    assert!(out.contains("Paris"), "{out}");
}

/// Ctrl-C at the chat prompt (nothing generating) ends the chat, with status 130.
#[cfg(unix)]
#[test]
fn chat_ctrl_c_at_the_prompt_quits() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = suanpan()
        .args(["chat", "-m", &model(), "-t", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap(); // kept open: the chat waits at its prompt
    let mut stderr = child.stderr.take().unwrap();
    let mut err = Vec::new();
    let mut buf = [0u8; 256];
    while !err.ends_with(b"> ") {
        match stderr.read(&mut buf).unwrap() {
            0 => panic!("stderr closed: {}", String::from_utf8_lossy(&err)),
            n => err.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chat did not quit on Ctrl-C at the prompt");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    assert_eq!(
        status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&err)
    );
}

#[test]
fn convert_calib_refuses_what_it_cannot_calibrate() {
    let dir = std::env::temp_dir().join(format!("suanpan-calib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("short.txt");
    std::fs::write(&text, "Only a few words.").unwrap();
    let bad_utf8 = dir.join("bad.txt");
    std::fs::write(&bad_utf8, b"\xff\xfe not text").unwrap();
    let out_path = dir.join("out.gguf");
    let out = out_path.to_str().unwrap();
    let m = model();
    for (args, want) in [
        (
            vec!["--to", "df11", "--calib", text.to_str().unwrap()],
            "--calib applies to lut1..lut4",
        ),
        (
            vec!["--to", "lut3", "--rtn", "--calib", text.to_str().unwrap()],
            "--calib applies to lut1..lut4",
        ),
        (
            vec!["--to", "lut3", "--calib", text.to_str().unwrap()],
            "fewer than one chunk",
        ),
        (
            vec!["--to", "lut3", "--calib", bad_utf8.to_str().unwrap()],
            "UTF-8",
        ),
    ] {
        let o = suanpan()
            .args(["convert", &m, out])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_path.exists(), "{args:?} left an output file");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input (issue 18).

fn hostile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("suanpan-hostile-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The default model with `tokenizer.chat_template` replaced.
fn model_with_template(name: &str, template: &str) -> String {
    use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
    let path = hostile_dir().join(format!("{name}.gguf"));
    let f = GgufFile::open(model()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        w.add_meta(k, v.clone());
    }
    w.add_meta("tokenizer.chat_template", Value::String(template.into()));
    for t in &f.tensors {
        w.add_tensor(&t.name, &t.dims, t.ty, f.tensor_data(t).to_vec());
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    w.write_to(&mut out).unwrap();
    drop(out);
    path.display().to_string()
}

#[test]
fn hostile_chat_templates_end_with_an_error_not_a_crash() {
    for (name, template, want) in [
        (
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
            "instructions",
        ),
        (
            "doubling",
            "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
            "memory",
        ),
    ] {
        let m = model_with_template(name, template);
        let out = suanpan()
            .args(["chat", "-m", &m, "-p", "hi", "-n", "2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("error:") && err.contains(want), "{name}: {err}");
        // `run` does not use the template.
        ok_stdout(&["run", "-m", &m, "-p", "hi", "-n", "2"]);
        std::fs::remove_file(&m).unwrap();
    }
}

#[test]
fn a_template_that_does_not_parse_only_breaks_chat() {
    let m = model_with_template("broken", "{% if %}");
    ok_stdout(&["run", "-m", &m, "-p", "hi", "-n", "2"]);
    let info = ok_stdout(&["info", &m]);
    assert!(info.contains("broken, chat unavailable"), "{info}");
    let out = suanpan()
        .args(["chat", "-m", &m, "-p", "hi", "-n", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not parse"), "{err}");
    std::fs::remove_file(&m).unwrap();
}

#[test]
fn convert_protects_its_input_and_existing_files() {
    let d = hostile_dir().join("convert");
    std::fs::create_dir_all(&d).unwrap();
    let input = d.join("in.gguf");
    std::fs::copy(model(), &input).unwrap();
    let before = std::fs::metadata(&input).unwrap().len();
    let input_s = input.to_str().unwrap();
    let existing = d.join("existing.gguf");
    std::fs::write(&existing, b"keep").unwrap();
    for (out, extra, want) in [
        (input_s, "--force", "is the input"),
        (existing.to_str().unwrap(), "-t1", "--force"),
        ("/dev/full", "--force", "not a regular file"),
    ] {
        let o = suanpan()
            .args(["convert", input_s, out, "--to", "bf16", extra])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{out}: {err}");
        assert!(err.contains(want), "{out}: {err}");
    }
    assert_eq!(std::fs::metadata(&input).unwrap().len(), before);
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    assert!(!std::fs::metadata("/dev/full").unwrap().is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn convert_interrupted_leaves_no_temporary_file() {
    let d = hostile_dir().join("interrupt");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("out.gguf");
    let mut child = suanpan()
        .args([
            "convert",
            &model(),
            out.to_str().unwrap(),
            "--to",
            "df11",
            "--cast",
            "-t",
            "1",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the temporary file (the conversion writes it at the end), then Ctrl-C.
    let tmp = loop {
        let found = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| n.contains(".suanpan-"));
        if let Some(n) = found {
            break Some(n);
        }
        if child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let status = if tmp.is_some() {
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    } else {
        child.wait().unwrap()
    };
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".suanpan-"))
        .collect();
    eprintln!("temporary file seen: {tmp:?}; exit {status:?}");
    assert!(left.is_empty(), "{left:?} left after {status:?}");
    if tmp.is_some() && !status.success() {
        assert_eq!(status.code(), Some(130));
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn messages_say_each_thing_once() {
    let d = hostile_dir();
    let missing = d.join("missing.gguf");
    let out = suanpan()
        .args(["run", "-m", missing.to_str().unwrap(), "-p", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let out = suanpan()
        .args(["run", "-m", d.to_str().unwrap(), "-p", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a folder"), "{err}");
    let text = d.join("text.txt");
    std::fs::write(&text, "some words ".repeat(200)).unwrap();
    let out = suanpan()
        .args([
            "perplexity",
            "-m",
            &model(),
            "-f",
            text.to_str().unwrap(),
            "--chunks",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--chunks must be at least 1"), "{err}");
}

/// The REPL survives a line that is not UTF-8 and a message too long for the context.
#[test]
fn chat_repl_survives_bad_lines() {
    use std::io::Write;
    let mut child = suanpan()
        .args([
            "chat",
            "-m",
            &model(),
            "-c",
            "128",
            "-n",
            "2",
            "--temp",
            "0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"caf\xe9 au lait\n").unwrap();
    stdin.write_all("word ".repeat(2000).as_bytes()).unwrap();
    stdin.write_all(b"\nHi\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
    assert!(
        err.contains("context full") && err.contains("not added"),
        "{err}"
    );
    // Three prompts, each answered or refused, then end of input.
    assert_eq!(err.matches("> ").count(), 4, "{err}");
}

#[test]
fn run_and_chat_follow_json_schema_regex_and_grammar() {
    let dir = std::env::temp_dir().join(format!("suanpan-cli-constrain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","properties":{"city":{"type":"string","maxLength":20},
            "country":{"enum":["France","Spain","Italy"]}},
            "required":["city","country"],"additionalProperties":false}"#,
    )
    .unwrap();
    let grammar = dir.join("yn.lark");
    std::fs::write(&grammar, "start: (\"yes\" | \"no\") \".\"\n").unwrap();
    let cases: [(&str, [&str; 2]); 3] = [
        ("chat", ["--json-schema", schema.to_str().unwrap()]),
        ("run", ["--regex", "[0-9]{4}-[0-9]{2}"]),
        ("chat", ["--grammar", grammar.to_str().unwrap()]),
    ];
    for (cmd, flag) in cases {
        let out = suanpan()
            .args([
                cmd,
                "-m",
                &model(),
                "-p",
                "Where is Paris?",
                "-n",
                "48",
                "-t",
                "2",
            ])
            .args(flag)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flag:?}: {err}");
        let text = String::from_utf8(out.stdout).unwrap();
        let text = text.trim_end_matches('\n');
        match flag[0] {
            "--json-schema" => {
                let v: serde_json::Value =
                    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                let o = v.as_object().unwrap();
                assert_eq!(o.len(), 2, "{text}");
                assert!(o["city"].as_str().is_some_and(|c| c.chars().count() <= 20));
                assert!(["France", "Spain", "Italy"].contains(&o["country"].as_str().unwrap()));
            }
            "--regex" => {
                let b = text.as_bytes();
                assert_eq!(b.len(), 7, "{text:?}");
                assert!(b.iter().enumerate().all(|(i, c)| if i == 4 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }));
            }
            _ => assert!(text == "yes." || text == "no.", "{text:?}"),
        }
    }
    // Two constraints at once, a missing file and a bad regex are clear errors.
    for flags in [
        vec!["--regex", "a", "--grammar", grammar.to_str().unwrap()],
        vec!["--json-schema", "/nonexistent/schema.json"],
        vec!["--regex", "(unclosed"],
    ] {
        let out = suanpan()
            .args(["run", "-m", &model(), "-p", "Hi", "-n", "4", "-t", "2"])
            .args(&flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(
            err.contains("exclude each other") || err.contains("reading") || err.contains("regex"),
            "{flags:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `convert --to df12` and `--to df11`, then `info` and `estimate` print the DF11 size on
/// disk and the df12 size in memory; `--keep-df11` loads without the transcode; `bench`
/// reports the transcode rate; a df12 model generates the BF16 model's greedy text.
#[test]
fn df12_convert_info_estimate_and_keep_df11() {
    let dir = std::env::temp_dir().join(format!("suanpan-df12-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (bf, d11, d12) = (p("m.bf16.gguf"), p("m.df11.gguf"), p("m.df12.gguf"));
    ok_stdout(&["convert", &model(), &bf, "--to", "bf16"]);
    ok_stdout(&["convert", &bf, &d11, "--to", "df11"]);
    let conv = suanpan()
        .args(["convert", &bf, &d12, "--to", "df12"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&conv.stderr);
    assert!(
        conv.status.success() && err.contains("to df12 (12.0"),
        "{err}"
    );
    let info = ok_stdout(&["info", &d11, "-b", "cpu"]);
    let line = info
        .lines()
        .find(|l| l.starts_with("lossless BF16:"))
        .unwrap_or_else(|| panic!("{info}"));
    assert!(
        line.contains("DF11 1") && line.contains("df12 20"),
        "{line}"
    );
    assert!(info.contains("DF11 → df12 at load"), "{info}");
    let est = ok_stdout(&["estimate", "-m", &d11]);
    assert!(est.contains("lossless BF16:"), "{est}");
    let kept = ok_stdout(&["info", &d11, "-b", "cpu", "--keep-df11"]);
    assert!(kept.contains("df12 0.0 MB in memory"), "{kept}");
    assert!(!kept.contains("DF11 → df12 at load"), "{kept}");
    let bench = ok_stdout(&[
        "bench",
        "-m",
        &d11,
        "-b",
        "cpu",
        "-t",
        "1",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--json",
    ]);
    assert!(bench.contains("\"transcode_gbps\":"), "{bench}");
    let run = |m: &str| {
        ok_stdout(&[
            "run",
            "-m",
            m,
            "-b",
            "cpu",
            "-p",
            "The capital of France is",
            "-n",
            "6",
            "--temp",
            "0",
        ])
    };
    assert_eq!(run(&d12), run(&bf));
    let _ = std::fs::remove_dir_all(&dir);
}
