//! The Redis store itself, against a real `redis-server` on a free loopback port: atomic
//! multi-limit admission, key names and expiry, script reloading, pauses and lowering.

use std::time::Duration;

use redis::AsyncCommands;
use tollgate::classify::LimitKind;
use tollgate::rate_limit::{Charge, Grant, Rate, Store};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;

fn charge(quota: &str, requests: Option<Rate>, tokens: Option<(Rate, u64)>) -> Charge {
    Charge::new(quota, requests, tokens, Duration::ZERO)
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

// Rates per hour: the few milliseconds a test takes refill nothing that matters.
const FIVE_REQUESTS: Rate = Rate::new(5, Duration::from_secs(3600)).with_burst(5);
const THOUSAND_TOKENS: Rate = Rate::new(1000, Duration::from_secs(3600)).with_burst(1000);

#[tokio::test]
async fn a_request_refused_by_its_request_limit_is_charged_no_tokens() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let both = || charge("atomic", Some(FIVE_REQUESTS), Some((THOUSAND_TOKENS, 100)));
    for _ in 0..5 {
        assert_eq!(store.acquire(both()).await.unwrap(), Grant::Admitted);
    }
    for _ in 0..20 {
        match store.acquire(both()).await.unwrap() {
            Grant::Wait { wait, which } => {
                assert_eq!(which, LimitKind::Requests);
                assert!(
                    wait > Duration::from_secs(600),
                    "one request per 12 minutes: {wait:?}"
                );
            }
            other => panic!("a sixth request was not refused: {other:?}"),
        }
    }
    // 5 x 100 tokens were charged, none for the 20 refusals: exactly 500 remain.
    let tokens_only = |cost| charge("atomic", None, Some((THOUSAND_TOKENS, cost)));
    assert_eq!(
        store.acquire(tokens_only(500)).await.unwrap(),
        Grant::Admitted
    );
    assert!(matches!(
        store.acquire(tokens_only(1)).await.unwrap(),
        Grant::Wait {
            which: LimitKind::Tokens,
            ..
        }
    ));
}

#[tokio::test]
async fn a_request_refused_by_its_token_limit_takes_no_request_slot() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let hundred = Rate::new(100, Duration::from_secs(3600)).with_burst(100);
    let both = |cost| charge("atomic", Some(hundred), Some((THOUSAND_TOKENS, cost)));
    assert_eq!(store.acquire(both(900)).await.unwrap(), Grant::Admitted);
    for _ in 0..10 {
        assert!(matches!(
            store.acquire(both(200)).await.unwrap(),
            Grant::Wait {
                which: LimitKind::Tokens,
                ..
            }
        ));
    }
    // One request slot was taken, not eleven: 99 remain.
    let requests_only = || charge("atomic", Some(hundred), None);
    for n in 0..99 {
        assert_eq!(
            store.acquire(requests_only()).await.unwrap(),
            Grant::Admitted,
            "request {n} of the 99 left"
        );
    }
    assert!(matches!(
        store.acquire(requests_only()).await.unwrap(),
        Grant::Wait {
            which: LimitKind::Requests,
            ..
        }
    ));
}

#[tokio::test]
async fn keys_are_namespaced_and_expire_when_the_bucket_is_full_again() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .prefix("jobs")
        .build()
        .unwrap();
    let mut redis = raw(&server).await;
    // 10 per second, burst 5: after 5 admissions the bucket is full again 500 ms later.
    let rate = Rate::per_second(10).with_burst(5);
    for _ in 0..5 {
        let grant = store
            .acquire(charge("gpt-4o", Some(rate), None))
            .await
            .unwrap();
        assert_eq!(grant, Grant::Admitted);
    }
    let ttl: i64 = redis.pttl("jobs:{gpt-4o}:requests").await.unwrap();
    assert!(
        (1..=500).contains(&ttl),
        "the key lives until the bucket is full, no longer: {ttl} ms"
    );
    let other: i64 = redis.exists("tollgate:{gpt-4o}:requests").await.unwrap();
    assert_eq!(other, 0, "only the configured prefix is used");
}

#[tokio::test]
async fn the_scripts_are_loaded_again_after_a_script_flush() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let mut redis = raw(&server).await;
    let rate = Some(Rate::per_minute(100).with_burst(100));
    assert_eq!(
        store.acquire(charge("q", rate, None)).await.unwrap(),
        Grant::Admitted
    );
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        store.acquire(charge("q", rate, None)).await.unwrap(),
        Grant::Admitted,
        "NOSCRIPT is answered by loading the script again"
    );
}

#[tokio::test]
async fn a_pause_holds_every_admission_and_is_never_shortened() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let rate = Some(Rate::per_minute(100).with_burst(100));
    store.pause("q", Duration::from_secs(30)).await.unwrap();
    store.pause("q", Duration::from_secs(1)).await.unwrap();
    match store.acquire(charge("q", rate, None)).await.unwrap() {
        Grant::Wait { wait, which } => {
            assert_eq!(which, LimitKind::Paused);
            assert!(
                wait > Duration::from_secs(25),
                "the longer pause holds: {wait:?}"
            );
        }
        other => panic!("admitted during a pause: {other:?}"),
    }
    // Another quota is not paused.
    assert_eq!(
        store.acquire(charge("other", rate, None)).await.unwrap(),
        Grant::Admitted
    );
}

#[tokio::test]
async fn lowering_to_the_providers_remaining_never_raises() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let rate = Rate::new(10, Duration::from_secs(3600)).with_burst(10);
    let requests = || charge("q", Some(rate), None);
    assert_eq!(store.acquire(requests()).await.unwrap(), Grant::Admitted);
    // 9 remain here; the provider says 2 (someone else spends from the key).
    store
        .lower("q", LimitKind::Requests, rate, 2)
        .await
        .unwrap();
    store
        .lower("q", LimitKind::Requests, rate, 8)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(store.acquire(requests()).await.unwrap(), Grant::Admitted);
    }
    assert!(matches!(
        store.acquire(requests()).await.unwrap(),
        Grant::Wait {
            which: LimitKind::Requests,
            ..
        }
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error_within_the_timeout() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let store = RedisStore::builder(url)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        store.acquire(charge("q", Some(Rate::per_minute(1)), None)),
    )
    .await
    .expect("no hang while Redis is down");
    let error = answer.expect_err("no admission without Redis");
    assert!(error.to_string().contains("store unavailable"), "{error}");
}

#[test]
fn bad_settings_are_config_errors() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let error = RedisStore::builder("http://not-redis").build().unwrap_err();
    assert_eq!(error.field(), "url");
    let error = RedisStore::builder("redis://127.0.0.1/")
        .prefix("a{b}")
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "prefix");
    let error = RedisStore::builder("redis://127.0.0.1/")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "timeout");
}

#[test]
fn the_password_in_the_url_never_reaches_debug_output() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let builder = RedisStore::builder("redis://:s3cret-pass@127.0.0.1:1/");
    assert!(!format!("{builder:?}").contains("s3cret"));
    let store = builder.build().unwrap();
    let shown = format!("{store:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("tollgate"), "the prefix is shown: {shown}");
}
