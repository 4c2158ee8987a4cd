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
