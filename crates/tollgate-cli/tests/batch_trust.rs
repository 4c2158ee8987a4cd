//! `tollgate batch` an operator can trust: failures are recorded and retried on a rerun, the exit
//! code says how the run ended, results are bound to their input, a hung connection is cut by
//! default, bad settings stop the run before anything is sent, SIGTERM stops it gracefully, odd
//! input is reported line by line, and the report's series are real. The real binary against
//! the mock provider on loopback.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{batch, batch_to, key_of, prompts, prompts_saying, results, run, scratch, stderr};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};

fn once_each(lines: &[Value]) -> HashMap<String, &Value> {
    let mut by_key = HashMap::new();
    for line in lines {
        assert!(
            by_key.insert(key_of(line), line).is_none(),
            "{} written twice",
            key_of(line)
        );
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_every_line_and_the_fixed_key_retries_them_all() {
    let mock = MockServer::spawn(MockConfig {
        api_key: Some("sk-right".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("wrong-key");
    let input = prompts(&dir, 20, "");
    let output = dir.join("results.jsonl");
    let mut wrong = batch(&input, &output);
    wrong
        .args(["--endpoint", &mock.url()])
        .env("TOLLGATE_API_KEY", "sk-wrong");
    let first = run(wrong).await;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let lines = results(&output);
    assert_eq!(lines.len(), 20);
    assert!(lines.iter().all(|l| l["error"]["kind"] == "http_401"
        && l["failure"] == "retryable"
        && l["error"]["message"].is_string()));

    let mut fixed = batch(&input, &output);
    fixed
        .args(["--endpoint", &mock.url()])
        .env("TOLLGATE_API_KEY", "sk-right");
    let second = run(fixed).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("trying again 20 lines"),
        "{}",
        stderr(&second)
    );
    let lines = results(&output);
    let by_key = once_each(&lines);
    assert_eq!(by_key.len(), 20);
    assert!(lines.iter().all(|l| l["outcome"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_bound_to_their_input() {
    let dir = scratch("bound");
    let output = dir.join("results.jsonl");
    let first_input = prompts_saying(&dir, 10, "First question", "");
    let first = run(batch(&first_input, &output)).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before: HashMap<String, String> = results(&output)
        .iter()
        .map(|l| (key_of(l), l["fingerprint"].as_str().unwrap().to_owned()))
        .collect();

    // Another input with the same ids: its lines are sent, not taken as done.
    let other_dir = scratch("bound-other");
    let other_input = prompts_saying(&other_dir, 10, "Another question", "");
    let second = run(batch(&other_input, &output)).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("10 results in") && stderr(&second).contains("different line"),
        "{}",
        stderr(&second)
    );
    let lines = results(&output);
    let after = once_each(&lines);
    assert_eq!(after.len(), 10);
    for (key, line) in after {
        assert_ne!(line["fingerprint"].as_str().unwrap(), before[&key], "{key}");
    }

    let same = run(batch(&other_input, &other_input)).await;
    assert_eq!(same.status.code(), Some(2));
    assert!(
        stderr(&same).contains("is the input file"),
        "{}",
        stderr(&same)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_connection_is_cut_by_the_default_attempt_timeout() {
    let mock = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 0.3,
            mix: FaultMix {
                hang: 1,
                ..FaultMix::none()
            },
            hang: Duration::from_secs(300),
            outages: Vec::new(),
        },
        seed: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("hang");
    let input = prompts(&dir, 8, "");
    let output = dir.join("results.jsonl");
    let mut command = batch_to(&input, &output, &mock.url());
    // max_tokens 1: the default attempt timeout is 10.1 s.
    command.args(["--max-tokens", "1"]);
    let started = Instant::now();
    let finished = run(command).await;
    let took = started.elapsed();
    assert!(mock.stats().hangs > 0, "the mock held a connection");
    assert!(
        took < Duration::from_secs(60),
        "a hang of 300 s was cut: the run took {took:?}"
    );
    assert_eq!(results(&output).len(), 8, "{}", stderr(&finished));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_run_in_seconds_before_anything_is_written() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let dir = scratch("preflight");
    let input = prompts(&dir, 5, "");
    let output = dir.join("results.jsonl");
    let mock_url = mock.url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--endpoint", "not-a-url"],
            "invalid --endpoint `not-a-url`",
        ),
        (
            vec!["--endpoint", "ftp://127.0.0.1/"],
            "http:// or https://",
        ),
        (
            vec!["--endpoint", "http://127.0.0.1:1"],
            "cannot reach --endpoint",
        ),
        (vec!["--endpoint", &mock_url], "no API key for --endpoint"),
        (
            vec!["--report", "/no/such/dir/report.svg"],
            "cannot write --report",
        ),
        (
            vec!["--summary-json", "/no/such/dir/s.json"],
            "cannot write --summary-json",
        ),
        (vec!["--rpm", "-5"], "must be a positive whole number"),
        (
            vec!["--redis", "redis://127.0.0.1:1/", "--rpm", "600"],
            "cannot reach --redis",
        ),
    ];
    for (args, message) in cases {
        let mut command = batch(&input, &output);
        command.args(&args);
        let started = Instant::now();
        let failed = run(command).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took long"
        );
        assert_eq!(
            failed.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&failed)
        );
        assert!(
            stderr(&failed).contains(message),
            "{args:?}: {}",
            stderr(&failed)
        );
        assert!(!output.exists(), "{args:?} created the output");
    }
    let full = run(batch(&input, Path::new("/dev/full"))).await;
    assert_eq!(full.status.code(), Some(2));
    assert!(
        stderr(&full).contains("not a regular file"),
        "{}",
        stderr(&full)
    );
    assert_eq!(mock.stats().requests, 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_requests_in_flight_finish_and_a_rerun_resumes() {
    let mock = MockServer::spawn(MockConfig {
        latency: Duration::from_millis(800),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("sigterm");
    let input = prompts(&dir, 40, "");
    let output = dir.join("results.jsonl");
    let summary = dir.join("summary.json");
    let mut command = batch_to(&input, &output, &mock.url());
    command
        .args(["--concurrency", "4"])
        .arg("--summary-json")
        .arg(&summary)
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    assert!(
        stderr(&stopped).contains("terminated"),
        "{}",
        stderr(&stopped)
    );
    let written = results(&output);
    let totals: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(
        !written.is_empty() && written.len() < 40,
        "{}",
        written.len()
    );
    assert_eq!(totals["written"].as_u64(), Some(written.len() as u64));
    assert!(
        totals["successes"].as_u64() <= totals["sent"].as_u64(),
        "{totals}"
    );
    assert!(
        totals["sent"].as_u64().unwrap() - totals["written"].as_u64().unwrap() == 0,
        "what was in flight finished within the grace period: {totals}"
    );

    let resumed = run(batch_to(&input, &output, &mock.url())).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(once_each(&results(&output)).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let mock = MockServer::spawn(MockConfig {
        latency: Duration::from_secs(20),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("second-signal");
    let input = prompts(&dir, 4, "");
    let output = dir.join("results.jsonl");
    let mut command = batch_to(&input, &output, &mock.url());
    command.args(["--grace", "60"]).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let pid = child.id().to_string();
    for _ in 0..2 {
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped at once"
    );
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    assert!(
        stderr(&stopped).contains("4 lines left"),
        "{}",
        stderr(&stopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_is_reported_line_by_line_and_ids_never_collide() {
    let dir = scratch("edges");
    let input = dir.join("prompts.jsonl");
    let mut bytes = b"\xEF\xBB\xBF{\"id\": \"first\", \"prompt\": \"hello\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"id\": \"bad-bytes\", \"prompt\": \"caf\xE9\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"x1\", \"prompt\": 5}\n");
    bytes.extend_from_slice(b"{\"prompt\": \"no id\"}\n");
    bytes.extend_from_slice(b"{oops\n");
    bytes.extend_from_slice(b"{\"id\": \"line-5\", \"prompt\": \"an id that looks generated\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"first\", \"prompt\": \"again\"}\n");
    std::fs::write(&input, bytes).unwrap();
    let output = dir.join("results.jsonl");
    let finished = run(batch(&input, &output)).await;
    assert_eq!(finished.status.code(), Some(1), "{}", stderr(&finished));
    let lines = results(&output);
    let by_key = once_each(&lines);
    assert_eq!(by_key.len(), 7);
    assert_eq!(
        by_key["first"]["outcome"], "ok",
        "the BOM is not part of the line"
    );
    assert_eq!(by_key["#4"]["outcome"], "ok", "a line without id");
    assert_eq!(
        by_key["line-5"]["outcome"], "ok",
        "a user id apart from line 5's key"
    );
    let message = |key: &str| by_key[key]["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message("#2").contains("line 2: not valid UTF-8"),
        "{}",
        message("#2")
    );
    assert_eq!(by_key["x1"]["outcome"], "invalid_input", "keeps its own id");
    assert!(message("x1").contains("line 3: `prompt` must be a string"));
    assert!(message("#5").contains("line 5: not valid JSON"));
    assert!(message("#7").contains("line 7: the id of an earlier line"));
    let invalid: HashSet<String> = lines
        .iter()
        .filter(|l| l["outcome"] == "invalid_input")
        .map(key_of)
        .collect();
    assert_eq!(
        invalid,
        ["#2", "x1", "#5", "#7"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_batch_files_run_unchanged_and_results_come_back_in_their_shape() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let dir = scratch("openai-batch");
    let input = dir.join("batch.jsonl");
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "{{\"custom_id\": \"request-{i}\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \
                 \"body\": {{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi {i}\"}}], \"max_tokens\": 10}}}}\n"
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let output = dir.join("out.jsonl");
    let mut command = batch_to(&input, &output, &mock.url());
    command.args(["--output-format", "openai-batch"]);
    let finished = run(command).await;
    assert_eq!(finished.status.code(), Some(0), "{}", stderr(&finished));
    let lines = results(&output);
    assert_eq!(lines.len(), 5);
    for line in &lines {
        assert!(line["custom_id"].as_str().unwrap().starts_with("request-"));
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["body"]["object"], "chat.completion");
        assert!(line["error"].is_null());
    }
    let again = {
        let mut command = batch_to(&input, &output, &mock.url());
        command.args(["--output-format", "openai-batch"]);
        run(command).await
    };
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        results(&output).len(),
        5,
        "resumed from its own output format"
    );
    assert_eq!(mock.stats().requests, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_plots_real_sent_429_and_retry_series() {
    let mock = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 0.3,
            mix: FaultMix {
                rate_limited_with_hint: 1,
                ..FaultMix::none()
            },
            ..Faults::default()
        },
        seed: 5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("series");
    let input = prompts(&dir, 40, "");
    let output = dir.join("results.jsonl");
    let report = dir.join("report.svg");
    let mut command = batch_to(&input, &output, &mock.url());
    command.arg("--report").arg(&report);
    let finished = run(command).await;
    // A request may meet the injected 429 on every attempt: the run then ends with 1.
    assert!(
        matches!(finished.status.code(), Some(0 | 1)),
        "{}",
        stderr(&finished)
    );
    let svg = std::fs::read_to_string(&report).unwrap();
    let document = roxmltree::Document::parse(&svg).unwrap();
    // The longest polyline of a colour is its series; the legend's are two points long.
    let series = |colour: &str| -> Vec<f64> {
        document
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(colour))
            .map(|n| {
                n.attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.split(',').nth(1)?.parse().ok())
                    .collect::<Vec<f64>>()
            })
            .max_by_key(Vec::len)
            .unwrap_or_default()
    };
    for (name, colour) in [
        ("sent", "#0000FF"),
        ("429s", "#FF0000"),
        ("retries", "#00FFFF"),
    ] {
        let ys = series(colour);
        let lowest = ys.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            ys.iter().any(|y| *y < lowest),
            "the {name} series is not flat at zero: {ys:?}"
        );
    }
    assert!(mock.stats().status(429) > 0);
}
