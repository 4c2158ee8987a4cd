//! Four `tollgate batch` processes on one API key, sharing its quota through a real Redis,
//! against one mock provider that enforces that quota: together they draw no 429.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use tollgate_e2e::redis_server::RedisServer;
use tollgate_mock::{MockConfig, MockServer};

const PROCESSES: usize = 4;
const PER_PROCESS: usize = 25;

fn prompts(dir: &std::path::Path, process: usize) -> PathBuf {
    let path = dir.join(format!("prompts-{process}.jsonl"));
    let text: String = (0..PER_PROCESS)
        .map(|i| format!("{{\"id\": \"p{process}-{i}\", \"prompt\": \"Summarise report {i}\"}}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_batch_processes_sharing_one_quota_through_redis_draw_no_429() {
    let redis = RedisServer::start();
    // The provider allows 1,200 requests per minute (20 per second, burst 10) per key.
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(1200),
        burst: Some(10),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let children: Vec<_> = (0..PROCESSES)
        .map(|process| {
            Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["batch", "--input"])
                .arg(prompts(&dir, process))
                .arg("--output")
                .arg(dir.join(format!("results-{process}.jsonl")))
                .arg("--summary-json")
                .arg(dir.join(format!("summary-{process}.json")))
                .args(["--endpoint", &mock.url(), "--redis", &redis.url()])
                // Each process is told the key's whole quota: Redis makes it one quota.
                .args(["--rpm", "1200", "--burst", "5", "--processes", "4"])
                .env("TOLLGATE_API_KEY", "sk-one-key-for-all")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut ok = 0;
    for process in 0..PROCESSES {
        let text = std::fs::read_to_string(dir.join(format!("results-{process}.jsonl"))).unwrap();
        for line in text.lines() {
            let result: Value = serde_json::from_str(line).unwrap();
            assert_eq!(result["outcome"], "ok", "{result}");
            ok += 1;
        }
    }
    assert_eq!(ok, PROCESSES * PER_PROCESS);
    let stats = mock.stats();
    assert_eq!(stats.limited, 0, "the provider refused nothing: {stats:?}");
    assert_eq!(stats.requests, (PROCESSES * PER_PROCESS) as u64);
}

#[test]
fn redis_without_a_limit_to_share_is_refused_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("tollgate-shared-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["batch", "--input"])
        .arg(prompts(&dir, 0))
        .arg("--output")
        .arg(dir.join("results.jsonl"))
        .args(["--redis", "redis://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--rpm, --tpm"), "{stderr}");
}
