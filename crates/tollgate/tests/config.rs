//! Provider presets, config files (TOML and JSON) with their errors, and the standard stack.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::{request, status, with_header, Scripted, Step};
use tollgate::circuit_breaker::{BreakGrowth, SlowCalls, Window};
use tollgate::config::{Config, ConfigFileError};
use tollgate::rate_limit::Rate;
use tollgate::retry::{BudgetConfig, Jitter, OverCeiling, RetryInfo, StopReason};
use tollgate::stack::{Policy, StandardLayer};
use tollgate::Provider;
use tower::{Layer, ServiceExt};

const FULL: &str = r#"
[providers.openai]
preset = "openai"
hosts = ["api.openai.com", "*.example.net"]

[providers.openai.limits]
requests = { rate = "500/min", burst = 50 }
tokens = 200000
concurrency = 16
max_wait = "30s"
max_queue = 1000

[providers.openai.retry]
max_attempts = 4
base = "250ms"
cap = "20s"
jitter = "decorrelated"
ceiling = "90s"
over_ceiling = "backoff"
deadline = "2m"
attempt_timeout = "45s"
budget = { ttl = "20s", min_per_sec = 5, ratio = 0.1 }

[providers.openai.breaker]
failure_ratio = 0.25
window = "30s"
min_calls = 10
slow_calls = { threshold = "20s", ratio = 0.8 }
break_duration = "15s"
break_growth = { factor = 2.0, cap = "5m" }
probes = 3

[providers.claude]
preset = "anthropic"
limits = { requests = 50 }
breaker = { consecutive_failures = 5 }
"#;

#[test]
fn a_full_toml_file_overrides_the_preset_field_by_field() {
    let config = Config::from_toml(FULL).unwrap();
    let openai = config.provider("openai").unwrap();
    assert_eq!(openai.provider, Provider::OpenAi);
    assert!(openai.serves_host("api.openai.com") && openai.serves_host("eu.example.net"));
    assert!(!openai.serves_host("example.net"));
    let limits = openai.limits;
    assert_eq!(limits.requests, Some(Rate::per_minute(500).with_burst(50)));
    assert_eq!(limits.tokens, Some(Rate::per_minute(200_000)));
    assert_eq!(limits.concurrency, Some(16));
    assert_eq!(
        (openai.limits.max_wait, openai.limits.max_queue),
        (Some(Duration::from_secs(30)), Some(1000))
    );
    let retry = &openai.retry;
    assert_eq!(
        (retry.max_attempts, retry.base, retry.cap),
        (4, Duration::from_millis(250), Duration::from_secs(20))
    );
    assert_eq!(
        (retry.jitter, retry.over_ceiling),
        (Jitter::Decorrelated, OverCeiling::UseBackoff)
    );
    assert_eq!(
        (retry.deadline, retry.attempt_timeout),
        (
            Some(Duration::from_secs(120)),
            Some(Duration::from_secs(45))
        )
    );
    assert_eq!(
        retry.budget,
        Some(BudgetConfig::new(Duration::from_secs(20), 5, 0.1))
    );
    let breaker = openai.breaker;
    assert_eq!(
        (breaker.failure_ratio, breaker.window, breaker.min_calls),
        (0.25, Window::time(Duration::from_secs(30)), 10)
    );
    assert_eq!(breaker.consecutive_failures, None);
    assert_eq!(
        breaker.slow_calls,
        Some(SlowCalls::new(Duration::from_secs(20), 0.8))
    );
    assert_eq!(
        breaker.break_growth,
        Some(BreakGrowth::new(2.0, Duration::from_secs(300)))
    );
    assert_eq!(breaker.probes, 3);

    let claude = config.provider("claude").unwrap();
    assert_eq!(
        claude.retry.max_attempts, 6,
        "unset fields keep the Anthropic preset"
    );
    assert!(claude.limits.sum_token_estimate);
    assert_eq!(claude.breaker.consecutive_failures, Some(5));
    assert_eq!(
        claude.limits.requests,
        Some(Rate::per_minute(50)),
        "a number is per minute"
    );

    assert!(config
        .provider("gemini")
        .unwrap_err()
        .to_string()
        .contains("it defines: claude, openai"));
}

#[test]
fn token_and_daily_limits_have_keys() {
    let config = Config::from_toml(
        "[providers.claude]\npreset = \"anthropic\"\n\
         limits = { input_tokens = 40000, output_tokens = { rate = \"8000/min\", burst = 2000 } }\n\
         [providers.groq]\npreset = \"groq\"\n\
         limits = { requests_per_day = 14400, tokens_per_day = 500000, day_starts_at = \"8h\" }\n",
    )
    .unwrap();
    let claude = config.provider("claude").unwrap();
    assert_eq!(claude.limits.input_tokens, Some(Rate::per_minute(40_000)));
    assert_eq!(
        claude.limits.output_tokens,
        Some(Rate::per_minute(8_000).with_burst(2_000))
    );
    assert!(!claude.limits.cache_reads_count, "the Anthropic preset");
    let groq = config.provider("groq").unwrap();
    assert_eq!(groq.limits.requests_per_day, Some(14_400));
    assert_eq!(groq.limits.tokens_per_day, Some(500_000));
    assert_eq!(groq.limits.day_starts_at, Duration::from_secs(8 * 3600));
}

#[test]
fn streams_have_keys_and_the_presets_gate_the_first_token() {
    let config = Config::from_toml(
        "[providers.claude]\npreset = \"anthropic\"\n\
         streams = { idle_timeout = \"2m\", deadline = \"10m\" }\n\
         [providers.raw]\npreset = \"openai\"\nstreams = { first_token_gate = false }\n",
    )
    .unwrap();
    let claude = config.provider("claude").unwrap();
    assert!(claude.streams.first_token_gate, "kept from the preset");
    assert_eq!(
        claude.streams.first_event_timeout,
        Some(Duration::from_secs(60))
    );
    assert_eq!(claude.streams.idle_timeout, Some(Duration::from_secs(120)));
    assert_eq!(claude.streams.deadline, Some(Duration::from_secs(600)));
    assert!(!config.provider("raw").unwrap().streams.first_token_gate);
    let error = Config::from_toml("[providers.x.streams]\nidle_timeout = \"0s\"\n").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("providers.x.streams.idle_timeout"),
        "{error}"
    );
}

#[test]
fn fallback_entries_name_a_provider_table_of_the_file() {
    let config = Config::from_toml(
        "[providers.a]\npreset = \"openai\"\n\
         [[fallback]]\nendpoint = \"https://b.example.com\"\nprovider = \"a\"\n",
    )
    .unwrap();
    assert_eq!(config.fallback[0].endpoint, "https://b.example.com");
    let error = Config::from_toml(
        "[providers.a]\npreset = \"openai\"\n[[fallback]]\nendpoint = \"https://b\"\nprovider = \"z\"\n",
    )
    .unwrap_err();
    assert!(error.to_string().contains("fallback.0.provider"), "{error}");
    let error = Config::from_toml("[[fallback]]\nurl = \"https://b\"\n").unwrap_err();
    assert!(error.to_string().contains("fallback.0"), "{error}");
}

#[test]
fn adaptive_is_the_default_and_a_switch() {
    let config = Config::from_toml(
        "[providers.open]\npreset = \"openai-compatible\"\n\
         [providers.tier]\npreset = \"openai\"\nlimits = { requests = 500, adaptive = true }\n\
         [providers.fixed]\npreset = \"openai\"\nlimits = { adaptive = false }\n",
    )
    .unwrap();
    let open = config.provider("open").unwrap();
    assert!(open.limits.adaptive.is_some());
    let tier = config.provider("tier").unwrap();
    assert!(tier.limits.adaptive.is_some(), "adapts below its 500 RPM");
    let fixed = config.provider("fixed").unwrap();
    assert!(fixed.limits.adaptive.is_none());
    // Built without limits: the default adapts, `adaptive = false` only learns.
    let snapshot = |name| {
        let layer = config.provider(name).unwrap().layer().unwrap();
        layer.limit_handle().limits().adaptive.is_some()
    };
    assert!(snapshot("open"));
    assert!(!snapshot("fixed"));
}

#[test]
fn json_says_the_same_as_toml() {
    let json = r#"{"providers": {"claude": {"preset": "anthropic", "limits": {"requests": 50},
        "breaker": {"consecutive_failures": 5}}}}"#;
    let from_json = Config::from_json(json).unwrap();
    let from_toml = Config::from_toml(FULL).unwrap();
    assert_eq!(from_json.providers["claude"], from_toml.providers["claude"]);
}

fn error_of(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn type_and_range_errors_name_the_key_line_and_column() {
    let cases = [
        (
            "[providers.x.limits]\nrequests = 0\n",
            "providers.x.limits.requests",
            "line 2",
            "at least 1",
        ),
        (
            "[providers.x.limits]\nrequests = \"many\"\n",
            "providers.x.limits.requests",
            "line 2",
            "not a rate",
        ),
        (
            "[providers.x]\npreset = \"chatgpt\"\n",
            "providers.x.preset",
            "line 2",
            "unknown variant `chatgpt`",
        ),
        (
            "[providers.x.retry]\nbase = \"soon\"\n",
            "providers.x.retry.base",
            "line 2",
            "write it like",
        ),
        (
            "[providers.x.retry]\nretries = 3\n",
            "providers.x.retry.retries",
            "line 2",
            "unknown field `retries`",
        ),
        (
            "[providers.x.retry]\njitter = \"some\"\n",
            "providers.x.retry.jitter",
            "line 2",
            "unknown variant `some`",
        ),
        (
            "[providers.x]\nhosts = \"api.openai.com\"\n",
            "providers.x.hosts",
            "line 2",
            "sequence",
        ),
        (
            "[providers.x.breaker]\nprobes = -1\n",
            "providers.x.breaker.probes",
            "line 2",
            "u32",
        ),
        (
            "[providers.x.retry]\nbudget = \"yes\"\n",
            "providers.x.retry.budget",
            "line 2",
            "`false`, `true`",
        ),
        ("[provider.x]\n", "provider", "line 1", "unknown key"),
    ];
    for (text, key, line, what) in cases {
        let error = error_of(text);
        assert!(
            error.contains(&format!("`{key}`")) && error.contains(line) && error.contains(what),
            "{text:?} gave: {error}"
        );
    }
    let syntax = error_of("[providers.x.limits\n");
    assert!(syntax.contains("line 1"), "{syntax}");
}

#[test]
fn rules_between_fields_name_the_config_key() {
    let cases = [
        ("[providers.x.retry]\nbase = \"2s\"\ncap = \"1s\"\n", "providers.x.retry.cap"),
        ("[providers.x.retry]\nfactor = 0.5\n", "providers.x.retry.factor"),
        ("[providers.x.retry]\nbudget = { ratio = 2.0 }\n", "providers.x.retry.budget.ratio"),
        ("[providers.x.breaker]\nfailure_ratio = 1.5\n", "providers.x.breaker.failure_ratio"),
        ("[providers.x.breaker]\nconsecutive_failures = 0\n", "providers.x.breaker.consecutive_failures"),
        ("[providers.x.breaker]\nwindow = 0\n", "providers.x.breaker.window"),
        ("[providers.x.breaker]\nslow_calls = { threshold = \"5s\", ratio = 0.0 }\n", "providers.x.breaker.slow_calls.ratio"),
        ("[providers.x.breaker]\nbreak_duration = \"10s\"\nbreak_growth = { factor = 2.0, cap = \"1s\" }\n", "providers.x.breaker.break_growth.cap"),
        ("[providers.x.limits]\nconcurrency = 0\n", "providers.x.limits.concurrency"),
        ("[providers.x.limits]\nrequests_per_day = 0\n", "providers.x.limits.requests_per_day"),
        ("[providers.x.limits]\nday_starts_at = \"25h\"\n", "providers.x.limits.day_starts_at"),
        ("[providers.x.limits]\noutput_tokens = 0\n", "providers.x.limits.output_tokens"),
        ("[providers.x.limits]\nadaptive = { beta = 1.5 }\n", "providers.x.limits.adaptive.beta"),
    ];
    for (text, field) in cases {
        match Config::from_toml(text) {
            Err(ConfigFileError::Invalid {
                field: got,
                message,
                position,
                ..
            }) => {
                assert_eq!(got, field, "{text:?}: {message}");
                assert!(!message.is_empty());
                assert!(position.is_some(), "{text:?}: the line of {field}");
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
}

#[test]
fn a_policy_written_out_reads_back_the_same() {
    for provider in Provider::ALL {
        let mut policy = Policy::preset(provider);
        policy.limits.requests = Some(Rate::per_second(50).with_burst(7));
        policy.retry.deadline = Some(Duration::from_secs(90));
        policy.breaker.break_growth = Some(BreakGrowth::new(2.0, Duration::from_secs(300)));
        let json =
            serde_json::json!({ "providers": { "p": serde_json::to_value(&policy).unwrap() } });
        let back = Config::from_json(&json.to_string()).unwrap();
        assert_eq!(back.providers["p"], policy, "{provider}");
    }
}

#[test]
fn files_are_read_by_extension_and_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("providers.toml");
    std::fs::write(&good, FULL).unwrap();
    assert_eq!(Config::load(&good).unwrap().providers.len(), 2);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[providers.x.retry]\nmax_attempts = 0\n").unwrap();
    let error = Config::load(&bad).unwrap_err().to_string();
    assert!(
        error.starts_with(&bad.display().to_string()) && error.contains("line 2"),
        "{error}"
    );
    let yaml = dir.join("providers.yaml");
    std::fs::write(&yaml, "providers: {}").unwrap();
    assert!(Config::load(&yaml)
        .unwrap_err()
        .to_string()
        .contains("*.toml or *.json"));
    let missing = Config::load(dir.join("missing.toml")).unwrap_err();
    assert!(
        matches!(missing, ConfigFileError::Io { .. })
            && missing.to_string().contains("missing.toml")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_preset_builds_and_knows_its_provider() {
    for provider in Provider::ALL {
        let policy = Policy::preset(provider);
        policy.layer().unwrap_or_else(|e| panic!("{provider}: {e}"));
        assert_eq!(provider.name().parse::<Provider>().unwrap(), provider);
    }
    assert!(Provider::AzureOpenAi.matches_host("my-resource.openai.azure.com"));
    assert!(!Provider::AzureOpenAi.matches_host("openai.azure.com.evil.net"));
    assert!(Provider::Groq.matches_host("API.GROQ.COM"));
    assert!(
        !Policy::preset(Provider::Groq).limits.adopt_provider_limits,
        "Groq reports requests per day"
    );
}

async fn through(provider: Provider, steps: Vec<Step>) -> (http::Response<String>, Scripted) {
    let mut policy = Policy::preset(provider);
    policy.retry.jitter = Jitter::None;
    // A known limit, so the waits below are the hints alone (without limits the adaptive mode
    // would slow down after the 429s, which its own tests cover).
    policy.limits.requests = Some(Rate::per_second(1_000));
    let provider_service = Scripted::new(steps);
    let stack = StandardLayer::new(&policy)
        .unwrap()
        .layer(provider_service.clone());
    let response = stack.oneshot(request()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (
        http::Response::from_parts(parts, String::from_utf8(body.to_vec()).unwrap()),
        provider_service,
    )
}

fn body(status: u16, json: &str) -> Step {
    Step::Body(status, json.to_owned())
}

#[tokio::test(start_paused = true)]
async fn each_preset_handles_its_providers_real_error_shapes() {
    // OpenAI billing 429: permanent, one attempt, the body handed back.
    let (response, provider) = through(
        Provider::OpenAi,
        vec![body(429, r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#)],
    )
    .await;
    assert_eq!(
        (response.status().as_u16(), provider.call_count()),
        (429, 1)
    );
    assert!(response.body().contains("insufficient_quota"));

    // OpenAI asks to wait 2 minutes: within its 120 s ceiling, so waited.
    let (response, provider) = through(
        Provider::OpenAi,
        vec![with_header(429, "retry-after", "100")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        provider.calls()[1] - provider.calls()[0],
        Duration::from_secs(100)
    );

    // Anthropic overloaded: retried; beyond its 60 s ceiling it backs off normally, as its SDK does.
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (response, provider) = through(
        Provider::Anthropic,
        vec![
            body(529, overloaded),
            with_header(429, "retry-after", "600"),
        ],
    )
    .await;
    assert_eq!(
        (response.status().as_u16(), provider.call_count()),
        (200, 3)
    );
    assert!(provider.calls()[2] - provider.calls()[1] <= Duration::from_secs(60));

    // Groq and Azure hints in seconds and milliseconds.
    let (_, provider) = through(Provider::Groq, vec![with_header(429, "retry-after", "2")]).await;
    assert_eq!(
        provider.calls()[1] - provider.calls()[0],
        Duration::from_secs(2)
    );
    let (_, provider) = through(
        Provider::AzureOpenAi,
        vec![with_header(429, "retry-after-ms", "1500")],
    )
    .await;
    assert_eq!(
        provider.calls()[1] - provider.calls()[0],
        Duration::from_millis(1500)
    );

    // Gemini: the wait is in the body; a per-day quota's hours-long wait gives up at once.
    let gemini = |delay: &str| {
        format!(
            r#"{{"error":{{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
        )
    };
    let (_, provider) = through(Provider::Gemini, vec![body(429, &gemini("7s"))]).await;
    assert_eq!(
        provider.calls()[1] - provider.calls()[0],
        Duration::from_secs(7)
    );
    let (response, provider) = through(Provider::Gemini, vec![body(429, &gemini("37025s"))]).await;
    assert_eq!(
        (response.status().as_u16(), provider.call_count()),
        (429, 1)
    );
    assert_eq!(
        response.extensions().get::<RetryInfo>().unwrap().stopped,
        Some(StopReason::HintOverCeiling)
    );
}

#[tokio::test(start_paused = true)]
async fn the_standard_stack_retries_limits_and_breaks_in_order() {
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.retry.jitter = Jitter::None;
    policy.limits.requests = Some(Rate::per_second(1).with_burst(1));
    policy.limits.headroom = Duration::ZERO;
    policy.breaker.consecutive_failures = Some(10);
    let layer = StandardLayer::new(&policy).unwrap();
    let limiter = layer.limit_handle();
    let provider = Scripted::new([status(503)]);
    let stack = layer.layer(provider.clone());
    let response = stack.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    // The retry waited for its backoff (500 ms) and then for a rate-limit permit (1 s after the first).
    assert_eq!(
        provider.calls()[1] - provider.calls()[0],
        Duration::from_secs(1)
    );
    assert_eq!(limiter.snapshot().requests_available, Some(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    /// No text panics the config loader (TOML and JSON).
    #[test]
    fn no_config_text_panics(text in "\\PC{0,200}") {
        let _ = Config::from_toml(&text);
        let _ = Config::from_json(&text);
    }

    /// Mutations of a valid file either load or fail with an error, never a panic.
    #[test]
    fn mutated_config_files_never_panic(position in 0usize..FULL.len(), byte in any::<u8>(), cut in 0usize..FULL.len()) {
        let mut bytes = FULL.as_bytes().to_vec();
        bytes[position] = byte;
        let text = String::from_utf8_lossy(&bytes[..cut.max(position + 1).min(bytes.len())]).into_owned();
        let _ = Config::from_toml(&text);
    }
}

fn to(uri: &str) -> http::Request<String> {
    http::Request::post(uri).body("{}".to_owned()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn routes_pick_a_policy_by_host_or_by_name_each_with_its_own_quota() {
    use tollgate::stack::{NoRoute, RouteLayer, RouteTo};
    let config = Config::from_toml(
        r#"
        [providers.openai]
        preset = "openai"
        limits = { requests = { rate = 60, burst = 1 }, headroom = "0s" }
        [providers.claude]
        preset = "anthropic"
        limits = { requests = { rate = 60, burst = 1 }, headroom = "0s" }
        [providers.local]
        hosts = ["127.0.0.1"]
        "#,
    )
    .unwrap();
    let routes = RouteLayer::from_config(&config).unwrap().fallback("local");
    let provider = Scripted::new([]);
    let router = routes.layer(provider.clone());
    let start = tokio::time::Instant::now();
    router
        .clone()
        .oneshot(to("https://api.openai.com/v1/chat/completions"))
        .await
        .unwrap();
    router
        .clone()
        .oneshot(to("https://api.anthropic.com/v1/messages"))
        .await
        .unwrap();
    router
        .clone()
        .oneshot(to("https://api.openai.com/v1/chat/completions"))
        .await
        .unwrap();
    let at: Vec<u64> = provider
        .calls()
        .iter()
        .map(|c| (*c - start).as_millis() as u64)
        .collect();
    assert_eq!(at, [0, 0, 1000], "Anthropic's quota is not OpenAI's");

    let mut named = to("https://gateway.internal/v1/messages");
    named.extensions_mut().insert(RouteTo::new("claude"));
    router.clone().oneshot(named).await.unwrap();
    assert_eq!(
        routes
            .layer_of("claude")
            .unwrap()
            .limit_handle()
            .snapshot()
            .requests_available,
        Some(0)
    );

    router
        .clone()
        .oneshot(to("https://unknown.example/v1"))
        .await
        .unwrap();
    assert_eq!(
        routes
            .layer_of("local")
            .unwrap()
            .limit_handle()
            .snapshot()
            .queued,
        0,
        "the fallback served it"
    );

    let strict = RouteLayer::from_config(&config)
        .unwrap()
        .layer(provider.clone());
    let error = strict
        .oneshot(to("https://unknown.example/v1"))
        .await
        .unwrap_err();
    let no_route = error.downcast_ref::<NoRoute>().unwrap();
    assert_eq!(no_route.host.as_deref(), Some("unknown.example"));
    assert!(error
        .to_string()
        .contains("no route serves host `unknown.example`"));
}

#[tokio::test(start_paused = true)]
async fn a_preset_without_limits_takes_them_from_the_first_response() {
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.headroom = Duration::ZERO;
    let provider = Scripted::new([Step::Status(
        200,
        vec![
            ("x-ratelimit-limit-requests", "60".into()),
            ("x-ratelimit-remaining-requests", "0".into()),
        ],
    )]);
    let stack = StandardLayer::new(&policy).unwrap().layer(provider.clone());
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        stack.clone().oneshot(request()).await.unwrap();
    }
    let at: Vec<u64> = provider
        .calls()
        .iter()
        .map(|c| (*c - start).as_millis() as u64)
        .collect();
    // Nothing left, 60 per minute: one request a second from then on.
    assert_eq!(at, [0, 1000, 2000]);
}
