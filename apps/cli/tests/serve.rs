//! `suanpan serve` end to end on 127.0.0.1: the official `openai` Python client
//! (`serve_openai.py`, installed by `scripts/test` into `$SUANPAN_CACHE/openai-py`) drives a
//! chat completion, a stream, json_schema output, concurrent clients, a disconnect, bad
//! requests and a bounded load test; raw sockets check the busy answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn model() -> String {
    let p = suanpan::install::default_model_path();
    assert!(
        p.is_file(),
        "default model missing at {}; run scripts/test",
        p.display()
    );
    p.display().to_string()
}

/// The `openai` package installed by `scripts/test`.
fn openai_dir() -> PathBuf {
    let cache = std::env::var_os("SUANPAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/suanpan")
        });
    let d = cache.join("openai-py");
    assert!(
        d.join("openai").is_dir(),
        "the openai Python client is missing at {}; run scripts/test",
        d.display()
    );
    d
}

/// A running server; killed when dropped. `log` collects its stderr lines.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_suanpan"))
            .args(["serve", "-m", &model(), "-t", "2", "--host", "127.0.0.1"])
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                break;
            }
            seen.push(line);
        }
        let port = port.unwrap_or_else(|| panic!("server did not start: {seen:?}"));
        let log = Arc::new(Mutex::new(seen));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Server { child, port, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[test]
fn openai_client_against_the_server() {
    let server = Server::start(&["-c", "512", "--parallel", "2", "--api-key", "sk-test-key"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/serve_openai.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("sk-test-key")
        .arg(server.child.id().to_string())
        .env("PYTHONPATH", openai_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = server.log();
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.join("\n")
    );
    assert!(stdout.contains("\ndone"), "{stdout}");
    eprintln!("{stdout}"); // the checks and the load test's memory figures (--nocapture)
                           // The abandoned stream's generation stopped long before its 400 tokens.
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cancelled-id "))
        .expect("the script names the stream it abandoned");
    let line = log
        .iter()
        .find(|l| l.starts_with(&format!("[serve] {id}:")))
        .unwrap_or_else(|| panic!("no log line for {id}: {log:?}"));
    let pieces: usize = line
        .split("cancelled after ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{id} was not cancelled: {line}"));
    assert!(pieces < 100, "{line}");
    eprintln!("{line}");
}

/// One raw HTTP/1.1 request; returns the status line's code and the body read so far.
fn request(port: u16, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    let code = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    let mut rest = String::new();
    let _ = s.take(4096).read_to_string(&mut rest);
    (code, rest)
}

#[test]
fn a_full_queue_answers_503_and_bodies_are_bounded() {
    let server = Server::start(&["--parallel", "1", "--queue", "0", "--max-body", "4096"]);
    let port = server.port;
    // A long streamed generation holds the only session...
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = r#"{"prompt":"Once upon a time","max_tokens":2000,"stream":true}"#;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first[9..12], b"200");
    // ...so another request is refused at once, with an OpenAI error body.
    let (code, rest) = request(port, r#"{"prompt":"Hi","max_tokens":2}"#);
    assert_eq!(code, 503, "{rest}");
    assert!(rest.contains("server_busy"), "{rest}");
    drop(s); // disconnect: the session is freed
    let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(8192));
    let (code, _) = request(port, &big);
    assert_eq!(code, 413);
    // The freed session serves again (bounded wait for the cancellation to land).
    let mut ok = false;
    for _ in 0..50 {
        let (code, _) = request(port, r#"{"prompt":"Hi","max_tokens":2}"#);
        if code == 200 {
            ok = true;
            break;
        }
        assert_eq!(code, 503);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "the session was not freed: {:?}", server.log());
}
