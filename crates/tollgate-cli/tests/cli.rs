//! The `tollgate` command as a user runs it: happy paths, bad input, and kill -9 then resume.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{key_of, prompts, results, scratch, stderr, tollgate};

#[test]
fn a_batch_writes_one_result_per_line_and_reports_bad_lines() {
    let dir = scratch("happy");
    let input = prompts(&dir, 30, "{oops\n\n[1, 2]\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"model\": \"m\", \"id\": 7}\n");
    let output = dir.join("results.jsonl");
    let summary = dir.join("summary.json");
    let run = tollgate()
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--rpm", "6000", "--burst", "20", "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "invalid lines did not succeed: {}",
        stderr(&run)
    );
    assert!(
        stderr(&run).contains("line 31: not valid JSON"),
        "{}",
        stderr(&run)
    );
    let lines = results(&output);
    assert_eq!(lines.len(), 33);
    let by_id: HashMap<String, &Value> = lines.iter().map(|l| (key_of(l), l)).collect();
    assert_eq!(by_id["p0"]["outcome"], "ok");
    assert_eq!(by_id["p0"]["response"]["object"], "chat.completion");
    assert_eq!(by_id["7"]["status"], 200, "a chat body with a numeric id");
    assert_eq!(by_id["#31"]["outcome"], "invalid_input");
    assert!(by_id["#33"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 33: expected a JSON object"));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        (summary["lines"].as_u64(), summary["successes"].as_u64()),
        (Some(33), Some(31))
    );
    assert_eq!(summary["errors_by_kind"]["invalid_input"], 2);
    assert_eq!(summary["rate_limited_429"], 0);

    let again = tollgate()
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(1),
        "the invalid lines still did not succeed"
    );
    assert!(
        stderr(&again).contains("--retry-failed"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        results(&output).len(),
        33,
        "a finished batch run again adds nothing"
    );
}

#[test]
fn bad_input_exits_non_zero_with_one_clear_message() {
    let dir = scratch("bad");
    let input = prompts(&dir, 1, "");
    let output = dir.join("out.jsonl");
    let bad_config = dir.join("bad.toml");
    std::fs::write(&bad_config, "[providers.x.limits]\nrequests = 0\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--input".into(),
                dir.join("missing.jsonl").display().to_string(),
                "--output".into(),
                output.display().to_string(),
            ],
            "cannot read input",
        ),
        (
            vec![
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                dir.join("no/such/dir.jsonl").display().to_string(),
            ],
            "does not exist",
        ),
        (
            vec![
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                output.display().to_string(),
                "--provider".into(),
                "chatgpt".into(),
            ],
            "unknown provider `chatgpt`",
        ),
        (
            vec![
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                output.display().to_string(),
                "--config".into(),
                bad_config.display().to_string(),
            ],
            "line 2",
        ),
        (
            vec![
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                output.display().to_string(),
                "--max-attempts".into(),
                "0".into(),
            ],
            "must be a positive whole number",
        ),
    ];
    for (args, message) in cases {
        let run = tollgate().arg("batch").args(&args).output().unwrap();
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        let text = stderr(&run);
        assert!(text.contains(message), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn a_batch_killed_at_any_moment_resumes_without_duplicates_or_gaps() {
    let dir = scratch("resume");
    let input = prompts(&dir, 2_000, "");
    let output = dir.join("results.jsonl");
    let args = |command: &mut Command| {
        command
            .args(["batch", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(["--rpm", "30000", "--burst", "50"]);
    };
    let mut first = tollgate();
    args(&mut first);
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it mid-run (500 per second for 2,000 takes about 4 s), as hard as possible.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&output).map_or(0, |m| m.len()) < 100_000
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&output).unwrap().lines().count();
    assert!(
        partial > 0 && partial < 2_000,
        "the first run was cut short: {partial}"
    );

    let mut second = tollgate();
    args(&mut second);
    let run = second.output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("resuming"), "{}", stderr(&run));
    let lines = results(&output);
    let mut ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2_000, "no duplicates: {} lines", ids.len());
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_000, "every id exactly once");
    assert!(lines
        .iter()
        .all(|l| l["outcome"] == "ok" && l["response"]["object"] == "chat.completion"));
}

#[test]
fn the_demo_and_the_mock_run() {
    let demo = tollgate()
        .args(["demo", "--requests", "30", "--rpm", "3000"])
        .output()
        .unwrap();
    assert!(demo.status.success(), "{}", stderr(&demo));
    let table = String::from_utf8_lossy(&demo.stdout);
    assert!(
        table.contains("| naive: fixed 1 s sleep |")
            && table.contains("| tollgate: standard stack | 30 | 0 | 0 |"),
        "{table}"
    );

    let mut mock = tollgate()
        .args(["mock", "--rpm", "600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(mock.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert!(first_line.starts_with("http://127.0.0.1:"), "{first_line}");
    mock.kill().unwrap();
    mock.wait().unwrap();
}

#[test]
fn the_report_renders_as_svg_and_html() {
    let dir = scratch("report");
    let input = prompts(&dir, 60, "");
    for (name, check) in [("report.svg", "svg"), ("report.html", "html")] {
        let output = dir.join(format!("{check}.jsonl"));
        let report = dir.join(name);
        let run = tollgate()
            .args(["batch", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(["--rpm", "6000", "--burst", "10", "--report"])
            .arg(&report)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(
            stderr(&run).contains("latency ms: p50"),
            "the text report is printed"
        );
        let text = std::fs::read_to_string(&report).unwrap();
        if check == "svg" {
            let document = roxmltree::Document::parse(&text).expect("the SVG parses as XML");
            assert_eq!(document.root_element().tag_name().name(), "svg");
            assert!(
                text.contains("configured limit") && text.contains("429s"),
                "legend present"
            );
        } else {
            assert!(
                text.starts_with("<!DOCTYPE html>")
                    && text.contains("<svg")
                    && text.contains("outcomes: ok 60")
            );
        }
    }
    let wrong = tollgate()
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.join("x.jsonl"))
        .args(["--report", "plot.png"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("*.svg or *.html"));
}

#[test]
fn ctrl_c_stops_admitting_lets_in_flight_finish_and_says_how_to_resume() {
    let dir = scratch("interrupt");
    let input = prompts(&dir, 2_000, "");
    let output = dir.join("results.jsonl");
    let child = tollgate()
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--rpm", "30000", "--burst", "50", "--grace", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&output).map_or(0, |m| m.len()) < 50_000
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("run the same command again to resume"),
        "{}",
        stderr(&run)
    );
    let partial = results(&output);
    assert!(partial.len() < 2_000);
    assert!(
        partial.iter().all(|l| l["outcome"] == "ok"),
        "in-flight requests finished, none cut off"
    );

    let resumed = tollgate()
        .args(["batch", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--rpm", "30000", "--burst", "50"])
        .output()
        .unwrap();
    assert!(resumed.status.success());
    let mut ids: Vec<String> = results(&output)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_000);
    assert_eq!(results(&output).len(), 2_000);
}

/// A provider that fails every request: the retry budget stops the storm, and each request it
/// stopped says so in its result line (not just the last status), so an operator can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_retry_budget_stopped_says_so() {
    use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
    let mock = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 1.0,
            mix: FaultMix {
                server_error: 1,
                ..FaultMix::none()
            },
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("budget");
    let input = prompts(&dir, 150, "");
    let output = dir.join("results.jsonl");
    // The breaker would fail the calls fast first; keep it out of the way.
    let config = dir.join("providers.toml");
    std::fs::write(
        &config,
        "[providers.p]\npreset = \"openai-compatible\"\n\
         breaker = { consecutive_failures = 1000000 }\n\
         retry = { base = \"1ms\", cap = \"2ms\" }\n",
    )
    .unwrap();
    let url = mock.url();
    let run = tokio::task::spawn_blocking(move || {
        tollgate()
            .args(["batch", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--config")
            .arg(&config)
            .args(["--endpoint", &url])
            .env("TOLLGATE_API_KEY", "sk-test")
            .output()
            .unwrap();
        results(&output)
    })
    .await
    .unwrap();
    assert_eq!(run.len(), 150);
    let kinds: Vec<&str> = run
        .iter()
        .map(|l| l["error"]["kind"].as_str().unwrap())
        .collect();
    let budget = kinds
        .iter()
        .filter(|k| **k == "retry_budget_exhausted")
        .count();
    // 10 retries a second for 10 s plus 20% of 150 requests: far fewer than the 600 wanted.
    assert!(
        budget > 0,
        "no request said the budget stopped it: {kinds:?}"
    );
    assert!(run
        .iter()
        .filter(|l| l["error"]["kind"] == "retry_budget_exhausted")
        .all(|l| l["error"]["stopped"] == "budget_exhausted" && l["status"].is_u64()));
}
