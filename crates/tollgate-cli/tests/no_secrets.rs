//! `tollgate batch` never writes the API key anywhere: for every provider preset, against the
//! mock injecting every kind of fault (5xx, 529, 429 with and without hints, resets, hangs,
//! garbage headers) and an outage, the key is in none of stdout, stderr, the results file, the
//! summary or the report.

mod support;

use std::time::Duration;

use tollgate::Provider;
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};

const KEY: &str = "sk-cli-canary-51e0a7c3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_preset_writes_the_key_anywhere_under_any_fault() {
    for provider in Provider::ALL {
        let mock = MockServer::spawn(MockConfig {
            api_key: Some(KEY.into()),
            faults: Faults {
                rate: 0.5,
                mix: FaultMix::default(),
                hang: Duration::from_secs(2),
                outages: vec![(Duration::from_millis(300), Duration::from_millis(600))],
            },
            seed: 11,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = support::scratch(provider.name());
        let input = dir.join("prompts.jsonl");
        let prompts: String = (0..24)
            .map(|i| format!("{{\"id\": \"p{i}\", \"prompt\": \"Summarise note {i}\"}}\n"))
            .collect();
        std::fs::write(&input, prompts).unwrap();
        let files = ["results.jsonl", "summary.json", "report.html"].map(|f| dir.join(f));
        // The preset, with short breaks: a 50% fault rate opens the breaker, and its default
        // 30 s break would only make the test slow.
        let config = dir.join("providers.toml");
        std::fs::write(
            &config,
            format!(
                "[providers.p]\npreset = \"{provider}\"\n\
                 breaker = {{ break_duration = \"100ms\" }}\n"
            ),
        )
        .unwrap();
        let mut command = support::tollgate();
        let url = mock.url();
        command
            .env(provider.auth().env[0], KEY)
            .args(["batch", "--endpoint", &url, "--config"])
            .arg(&config)
            .args(["--timeout", "0.5", "--max-attempts", "3", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&files[0])
            .arg("--summary-json")
            .arg(&files[1])
            .arg("--report")
            .arg(&files[2]);
        let run = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let mut written = String::from_utf8_lossy(&run.stdout).into_owned();
        written.push_str(&String::from_utf8_lossy(&run.stderr));
        for file in &files {
            written.push_str(&std::fs::read_to_string(file).unwrap_or_else(|e| {
                panic!(
                    "{provider}: {} was not written: {e}\n{written}",
                    file.display()
                )
            }));
        }
        let stats = mock.stats();
        assert_eq!(stats.status(401), 0, "{provider}: the key reached the mock");
        assert!(
            stats.resets > 0 && stats.hangs > 0 && stats.status(429) > 0 && stats.status(529) > 0,
            "{provider}: the batch met every kind of fault: {stats:?}"
        );
        assert!(stats.successes() > 0, "{provider}: some requests succeeded");
        assert!(
            !written.contains(KEY),
            "{provider}: the key was written out:\n{written}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
