//! `tollgate batch --fallback`: a primary in an outage, a healthy fallback; every line succeeds
//! and says which endpoint served it. The real binary against two mocks on loopback.

mod support;

use std::time::Duration;

use support::{batch_to, prompts, results, run, scratch, stderr};
use tollgate_mock::{Faults, MockConfig, MockServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_succeeds_through_the_fallback_and_says_so() {
    let primary = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::ZERO, Duration::from_secs(3600))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let secondary = MockServer::spawn(MockConfig::default()).await.unwrap();
    let dir = scratch("fallback");
    let input = prompts(&dir, 20, "");
    let output = dir.join("results.jsonl");
    // The fallback comes from the config file, as it would in production.
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.main]\npreset = \"openai\"\nretry = {{ max_attempts = 2 }}\n\
             [[fallback]]\nendpoint = \"{}\"\nmodel = \"gpt-4o\"\n",
            secondary.url()
        ),
    )
    .unwrap();
    let mut command = batch_to(&input, &output, &primary.url());
    command.arg("--config").arg(&config);
    let outcome = run(command).await;
    assert_eq!(outcome.status.code(), Some(0), "{}", stderr(&outcome));
    let lines = results(&output);
    assert_eq!(lines.len(), 20);
    for line in &lines {
        assert_eq!(line["outcome"], "ok");
        assert_eq!(line["served_by"]["target"], "fallback-1", "{line}");
        assert_eq!(line["response"]["model"], "gpt-4o", "the fallback's model");
        let reason = line["served_by"]["skipped"][0]["reason"].as_str().unwrap();
        assert!(
            ["gave_up_server_error", "breaker_open"].contains(&reason),
            "{reason}"
        );
    }
    assert_eq!(secondary.stats().requests, 20);
}
