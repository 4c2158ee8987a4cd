//! `tollgate batch` with the token and daily limits: a daily quota stops the batch cleanly and a
//! run after the reset resumes it; tokens used and the estimated cost are reported. The real
//! binary against the mock provider on loopback.

mod support;

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;
use support::{batch_to, key_of, prompts, results, run, scratch, stderr};
use tollgate_mock::{MockConfig, MockServer};

fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_twice_the_daily_allowance_stops_at_it_and_resumes_after_the_reset() {
    const ALLOWANCE: u64 = 15;
    let daily = || MockConfig {
        rpd: Some(ALLOWANCE),
        ..MockConfig::default()
    };
    let today = MockServer::spawn(daily()).await.unwrap();
    let dir = scratch("daily-quota");
    let input = prompts(&dir, 2 * ALLOWANCE as usize, "");
    let output = dir.join("results.jsonl");
    let first_summary = dir.join("first.json");
    let mut first = batch_to(&input, &output, &today.url());
    first
        .args(["--rpd", &ALLOWANCE.to_string(), "--summary-json"])
        .arg(&first_summary);
    let first = run(first).await;
    assert_eq!(first.status.code(), Some(75), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("run the same command again then to resume"),
        "{}",
        stderr(&first)
    );
    let written = results(&output);
    assert_eq!(
        written.len() as u64,
        ALLOWANCE,
        "only what was sent is written"
    );
    assert!(written.iter().all(|line| line["outcome"] == "ok"));
    let stats = today.stats();
    assert_eq!(stats.requests, ALLOWANCE, "exactly the allowance was sent");
    assert_eq!(stats.status(429), 0, "and no 429 drawn");
    let first_summary = summary(&first_summary);
    assert_eq!(first_summary["left_to_resume"], ALLOWANCE);
    assert_eq!(
        first_summary["daily_quota_spent"]["limit"],
        "requests per day"
    );

    // The next day (a fresh mock): the rest, and only the rest, is sent.
    let tomorrow = MockServer::spawn(daily()).await.unwrap();
    let mut second = batch_to(&input, &output, &tomorrow.url());
    second.args(["--rpd", &ALLOWANCE.to_string()]);
    let second = run(second).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(tomorrow.stats().requests, ALLOWANCE);
    let written = results(&output);
    let keys: HashSet<String> = written.iter().map(key_of).collect();
    assert_eq!(written.len() as u64, 2 * ALLOWANCE);
    assert_eq!(keys.len() as u64, 2 * ALLOWANCE, "every line once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_daily_429_stops_the_batch_after_one_refusal() {
    // The provider's quota is spent, tollgate was told nothing: one 429 teaches it, and the
    // other lines are left for a later run instead of drawing 429s of their own.
    let mock = MockServer::spawn(MockConfig {
        rpd: Some(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("provider-daily");
    let input = prompts(&dir, 30, "");
    let output = dir.join("results.jsonl");
    let mut command = batch_to(&input, &output, &mock.url());
    command.args(["--provider", "groq", "--concurrency", "1"]);
    let outcome = run(command).await;
    assert_eq!(outcome.status.code(), Some(75), "{}", stderr(&outcome));
    let stats = mock.stats();
    assert_eq!(stats.successes(), 3);
    assert_eq!(stats.status(429), 1, "one 429, then no more sent");
    // The refused line's retry met the spent quota: it is left for the next run, like the rest.
    assert_eq!(results(&output).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_used_and_the_estimated_cost_are_reported() {
    let mock = MockServer::spawn(MockConfig {
        output_share: Some((0.5, 0.5)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("tokens-cost");
    let input = prompts(&dir, 10, "");
    let output = dir.join("results.jsonl");
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        "[providers.claude]\npreset = \"anthropic\"\n\
         [prices.\"claude-haiku-4-5\"]\ninput = 1.0\noutput = 5.0\n",
    )
    .unwrap();
    let summary_path = dir.join("summary.json");
    let mut command = batch_to(&input, &output, &mock.url());
    command
        .args(["--max-tokens", "100", "--otpm", "60000", "--config"])
        .arg(&config)
        .arg("--summary-json")
        .arg(&summary_path);
    let outcome = run(command).await;
    assert_eq!(outcome.status.code(), Some(0), "{}", stderr(&outcome));
    let summary = summary(&summary_path);
    let stats = mock.stats();
    assert_eq!(summary["output_tokens"], 500, "10 answers of 50");
    assert_eq!(summary["output_tokens"], stats.output_tokens);
    assert_eq!(summary["input_tokens"], stats.input_tokens);
    let input_tokens = stats.input_tokens as f64;
    let expected = (input_tokens * 1.0 + 500.0 * 5.0) / 1e6;
    let cost = summary["estimated_cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert!(stderr(&outcome).contains("tokens: input"));
    // The default model follows the provider.
    assert!(results(&output)
        .iter()
        .all(|line| line["response"]["model"] == "claude-haiku-4-5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_batches_survive_errors_after_the_first_token() {
    // One stream in ten breaks with an error event after its first tokens: each is sent again
    // whole, and every result holds only a complete answer.
    let mock = MockServer::spawn(MockConfig {
        output_share: Some((0.05, 0.05)),
        stream_faults: tollgate_mock::StreamFaults {
            rate: 0.1,
            mix: tollgate_mock::StreamFaultMix {
                error_after_first_token: 1,
                ..tollgate_mock::StreamFaultMix::none()
            },
            ..tollgate_mock::StreamFaults::default()
        },
        seed: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("stream-batch");
    let input = prompts(&dir, 60, "");
    let output = dir.join("results.jsonl");
    let summary_path = dir.join("summary.json");
    let mut command = batch_to(&input, &output, &mock.url());
    command
        .args(["--stream", "--max-tokens", "200", "--summary-json"])
        .arg(&summary_path);
    let outcome = run(command).await;
    assert_eq!(outcome.status.code(), Some(0), "{}", stderr(&outcome));
    let lines = results(&output);
    assert_eq!(lines.len(), 60);
    for line in &lines {
        assert_eq!(line["outcome"], "ok");
        let text = line["response"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        assert_eq!(text, "tok ".repeat(10), "the complete answer only");
    }
    let summary = summary(&summary_path);
    let retried = summary["streams_retried"].as_u64().unwrap();
    assert!(retried >= 1, "{summary}");
    assert_eq!(
        mock.stats().requests,
        60 + retried,
        "each retried stream was sent again"
    );
    assert_eq!(
        summary["output_tokens"], 600,
        "usage read from the final chunks"
    );
}
