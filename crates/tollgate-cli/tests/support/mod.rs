//! What the command's tests share: the binary with no key in its environment, scratch
//! directories, prompt files and reading results back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The `tollgate` binary with no provider key in its environment (so, without `--endpoint`,
/// the batch runs against the embedded mock).
pub fn tollgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for provider in tollgate::Provider::ALL {
        for key in provider.auth().env {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// `tollgate batch` from `input` to `output`.
pub fn batch(input: &Path, output: &Path) -> Command {
    let mut command = tollgate();
    command
        .args(["batch", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output);
    command
}

/// `batch` against the mock at `url`, with a key.
pub fn batch_to(input: &Path, output: &Path, url: &str) -> Command {
    let mut command = batch(input, output);
    command
        .env("TOLLGATE_API_KEY", "sk-test")
        .args(["--endpoint", url]);
    command
}

/// Runs `command` to its end off the async runtime.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `count` prompt lines (`p0`, `p1`...) saying `text`, then `extra` as it is.
pub fn prompts_saying(dir: &Path, count: usize, text: &str, extra: &str) -> PathBuf {
    let path = dir.join("prompts.jsonl");
    let mut lines: String = (0..count)
        .map(|i| format!("{{\"id\": \"p{i}\", \"prompt\": \"{text} {i}\"}}\n"))
        .collect();
    lines.push_str(extra);
    std::fs::write(&path, lines).unwrap();
    path
}

/// `count` prompt lines, then `extra`.
pub fn prompts(dir: &Path, count: usize, extra: &str) -> PathBuf {
    prompts_saying(dir, count, "Classify email", extra)
}

/// The result lines of `path`.
pub fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A result line's key: its id, or `#N` for line N without one (a form no id takes here).
pub fn key_of(line: &Value) -> String {
    match line["id"].as_str() {
        Some(id) => id.to_owned(),
        None => format!("#{}", line["line"]),
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `tollgate serve` child process, killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// Its base URL, as it printed it.
    pub url: String,
    /// Where its stderr (its logs) goes.
    pub log: PathBuf,
}

/// Starts `tollgate serve` with `args` on a free loopback port and `env`, its logs to `log`;
/// returns once it listens.
pub fn serve(args: &[&str], env: &[(&str, &str)], log: &Path) -> Served {
    use std::io::BufRead;
    let mut command = tollgate();
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("http://"),
        "tollgate serve did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Served {
        child,
        url: line.trim().to_owned(),
        log: log.to_owned(),
    }
}

impl Served {
    /// Kills it with SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM and waits: its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}
