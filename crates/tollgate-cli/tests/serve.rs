//! `tollgate serve` as a process: replicas sharing one quota through a real Redis in front of a
//! mock provider enforcing it, one of them killed under load, and no provider key in any
//! answer, log line or metric.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_mock::{MockConfig, MockServer};

const PROVIDER_KEY: &str = "sk-provider-SECRET-0123456789";
const CLIENT_KEY: &str = "gw-client-0123456789";

/// A config file in `dir` serving the OpenAI preset as provider `mock` to `clients` (its
/// `[[serve.clients]]` tables); its path.
fn gateway_config(dir: &std::path::Path, clients: &str) -> std::path::PathBuf {
    let config = dir.join("gateway.toml");
    let text =
        format!("[providers.mock]\npreset = \"openai\"\n\n[serve]\nprovider = \"mock\"\n{clients}");
    std::fs::write(&config, text).unwrap();
    config
}

/// One chat request to the gateway at `url`; its status (0 when the connection failed).
async fn chat(client: &tollgate_e2e::HttpClient, url: &str, key: &str) -> (u16, String) {
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = Request::post(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            (
                status,
                format!("{:?} {}", parts.headers, String::from_utf8_lossy(&body)),
            )
        }
        Err(_) => (0, String::new()),
    }
}

/// The provider allows 1,200 requests per minute (20 a second, burst 10); two replicas are
/// each told that whole quota, shared through Redis.
async fn replicas(name: &str) -> (MockServer, RedisServer, Vec<support::Served>) {
    let redis = RedisServer::start();
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(1200),
        burst: Some(10),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = support::scratch(name);
    let served = (0..2)
        .map(|i| {
            support::serve(
                &[
                    "--endpoint",
                    &mock.url(),
                    "--client-key",
                    &format!("app={CLIENT_KEY}"),
                    "--redis",
                    &redis.url(),
                    "--rpm",
                    "1200",
                    "--burst",
                    "5",
                ],
                &[("OPENAI_API_KEY", PROVIDER_KEY)],
                &dir.join(format!("replica-{i}.log")),
            )
        })
        .collect();
    (mock, redis, served)
}

/// `per_replica` requests through each of `urls`, 8 at a time per replica; the statuses.
async fn load(urls: &[String], per_replica: usize) -> Vec<Vec<u16>> {
    let client = Arc::new(tollgate_e2e::http_client());
    let mut replicas = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let (client, url) = (Arc::clone(&client), url.clone());
        replicas.spawn(async move {
            let gate = Arc::new(tokio::sync::Semaphore::new(8));
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..per_replica {
                let permit = Arc::clone(&gate).acquire_owned().await.unwrap();
                let (client, url) = (Arc::clone(&client), url.clone());
                calls.spawn(async move {
                    let status = chat(&client, &url, CLIENT_KEY).await.0;
                    drop(permit);
                    status
                });
            }
            (i, calls.join_all().await)
        });
    }
    let mut statuses = vec![Vec::new(); urls.len()];
    for (i, s) in replicas.join_all().await {
        statuses[i] = s;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_one_quota_through_redis_draw_no_429() {
    let (mock, _redis, served) = replicas("serve-shared").await;
    let urls: Vec<String> = served.iter().map(|s| s.url.clone()).collect();
    let started = std::time::Instant::now();
    let statuses = load(&urls, 60).await;
    for replica in &statuses {
        assert!(replica.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let stats = mock.stats();
    assert_eq!(stats.requests, 120);
    assert_eq!(stats.limited, 0, "the provider refused nothing: {stats:?}");
    // 120 requests at 20 a second after a burst: about 5.5 s whatever the number of replicas.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_leaves_the_survivor_within_the_quota() {
    let (mock, _redis, mut served) = replicas("serve-killed").await;
    let urls: Vec<String> = served.iter().map(|s| s.url.clone()).collect();
    let load = tokio::spawn(async move { load(&urls, 60).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    served[0].kill();
    let statuses = load.await.unwrap();
    assert!(
        statuses[0].contains(&0),
        "the killed replica's clients saw it go: {statuses:?}"
    );
    assert!(statuses[1].iter().all(|s| *s == 200), "{statuses:?}");
    let stats = mock.stats();
    assert_eq!(stats.limited, 0, "the provider refused nothing: {stats:?}");
}

/// A client's own limits (3 requests, one more a minute) hold across two replicas sharing a
/// Redis, as the provider's quota does: 3 answers in all, not 3 from each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let dir = support::scratch("serve-client-limit");
    let config = gateway_config(
        &dir,
        r#"
[[serve.clients]]
name = "limited"
key = "gw-limited-0123456789"
limits = { requests = { rate = "1/min", burst = 3 } }
"#,
    );
    let served: Vec<_> = (0..2)
        .map(|i| {
            support::serve(
                &[
                    "--config",
                    config.to_str().unwrap(),
                    "--endpoint",
                    &mock.url(),
                    "--redis",
                    &redis.url(),
                    "--rpm",
                    "6000",
                ],
                &[("OPENAI_API_KEY", PROVIDER_KEY)],
                &dir.join(format!("replica-{i}.log")),
            )
        })
        .collect();
    let client = tollgate_e2e::http_client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        for replica in &served {
            statuses.push(chat(&client, &replica.url, "gw-limited-0123456789").await.0);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(mock.stats().requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_key_shows_in_no_answer_log_or_metric() {
    // The mock wants another key than the gateway holds for the last part: its 401 quotes it.
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(600),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = support::scratch("serve-secrets");
    let served = support::serve(
        &[
            "--endpoint",
            &mock.url(),
            "--client-key",
            &format!("app={CLIENT_KEY}"),
            "--rpm",
            "60",
            "--burst",
            "1",
            "--max-wait",
            "0.01",
            "-vvv",
            "--log-json",
        ],
        &[("OPENAI_API_KEY", PROVIDER_KEY)],
        &dir.join("serve.log"),
    );
    let client = tollgate_e2e::http_client();
    let mut answers = Vec::new();
    let (status, text) = chat(&client, &served.url, CLIENT_KEY).await;
    assert_eq!(status, 200, "{text}");
    answers.push(text);
    let (status, text) = chat(&client, &served.url, CLIENT_KEY).await;
    assert_eq!(status, 429, "over the quota: {text}");
    answers.push(text);
    let (status, text) = chat(&client, &served.url, "gw-wrong-0123456789").await;
    assert_eq!(status, 401, "{text}");
    answers.push(text);
    let metrics = client
        .request(
            Request::get(format!("{}/metrics", served.url))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains("tollgate_gateway_answers_total"),
        "{metrics}"
    );
    let status = served.terminate();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(
        log.contains("gateway.request"),
        "spans are logged at -vvv: {log}"
    );
    for (what, text) in [
        ("answers", answers.join("\n")),
        ("metrics", metrics),
        ("log", log),
    ] {
        for secret in [PROVIDER_KEY, &PROVIDER_KEY[3..20], CLIENT_KEY] {
            assert!(!text.contains(secret), "{what} show a key: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdks_work_through_the_gateway() {
    let setup = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/python-sdks.sh"
    ))
    .output()
    .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_owned();
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let dir = support::scratch("serve-sdks");
    let config = gateway_config(
        &dir,
        r#"
[[serve.clients]]
name = "app"
key_env = "APP_KEY"

[[serve.clients]]
name = "limited"
key = "gw-limited-0123456789"
limits = { requests = { rate = "60/min", burst = 1 } }
"#,
    );
    let served = support::serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--endpoint",
            &mock.url(),
        ],
        &[("OPENAI_API_KEY", PROVIDER_KEY), ("APP_KEY", CLIENT_KEY)],
        &dir.join("serve.log"),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdks.py");
    let run = tokio::task::spawn_blocking({
        let url = served.url.clone();
        move || {
            std::process::Command::new(python)
                .arg(script)
                .env("GATEWAY_URL", url)
                .env("CLIENT_KEY", CLIENT_KEY)
                .env("LIMITED_KEY", "gw-limited-0123456789")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let answer = "This is the mock provider's answer.";
    assert_eq!(out["openai_plain"], answer, "{out}");
    assert_eq!(out["anthropic_plain"], answer, "{out}");
    // The mock streams one "tok " per output token.
    assert!(
        out["openai_stream_text"]
            .as_str()
            .unwrap()
            .starts_with("tok tok"),
        "{out}"
    );
    assert!(
        out["anthropic_stream_text"]
            .as_str()
            .unwrap()
            .starts_with("tok tok"),
        "{out}"
    );
    assert!(out["openai_stream_chunks"].as_u64().unwrap() > 1, "{out}");
    assert!(
        out["anthropic_stream_chunks"].as_u64().unwrap() > 1,
        "{out}"
    );
    // The gateway's 429 (the client's own limit, 1 a second) was retried by each SDK after
    // the Retry-After it gave, and then succeeded.
    for sdk in ["openai", "anthropic"] {
        assert_eq!(out[format!("{sdk}_retries_taken")], 1, "{out}");
        let waited = out[format!("{sdk}_retry_waited_s")].as_f64().unwrap();
        assert!(
            (0.5..5.0).contains(&waited),
            "{sdk} waited {waited} s: {out}"
        );
        assert_eq!(out[format!("{sdk}_auth_error")], 401, "{out}");
    }
    assert_eq!(mock.stats().limited, 0);
}
