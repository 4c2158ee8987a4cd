//! The store over TLS (`rediss://`, a real redis-server speaking TLS only, its certificate from
//! a private CA) and on a real
//! three-node Redis Cluster: two limiters sharing one quota through it admit exactly the quota.

use std::time::Duration;

use tollgate::rate_limit::{OnStoreError, Rate, RateLimitError, RateLimitLayer, Refusal};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;
use tower::{Layer, ServiceExt};

/// Two limiters (two processes, as far as the quota knows) on `store`, sharing 5 requests an
/// hour: 5 are admitted between them, the next is refused with the wait, by either.
async fn five_between_two(store: RedisStore) {
    store.ping().await.expect("the store answers");
    let limiter = || {
        RateLimitLayer::builder()
            .requests(Rate::new(5, Duration::from_secs(3600)).with_burst(5))
            .max_wait(Duration::from_secs(1))
            .store(store.clone(), OnStoreError::FailClosed)
            .build()
            .unwrap()
            .layer(tower::service_fn(|_: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }))
    };
    let (a, b) = (limiter(), limiter());
    for i in 0..5 {
        let service = if i % 2 == 0 { a.clone() } else { b.clone() };
        service
            .oneshot(http::Request::new(String::new()))
            .await
            .expect("within the quota");
    }
    for service in [a, b] {
        let error = service
            .oneshot(http::Request::new(String::new()))
            .await
            .unwrap_err();
        let refusal = error
            .downcast_ref::<RateLimitError>()
            .expect("a refusal")
            .refusal();
        assert!(
            matches!(refusal, Refusal::WouldWait { wait, .. } if wait > Duration::from_secs(600)),
            "{refusal:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_shared_over_tls() {
    let dir = std::env::temp_dir().join(format!("tollgate-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A private CA signs the server's certificate for 127.0.0.1; the store trusts that CA.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, server_cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let server = RedisServer::start_tls(&cert, &key_path);
    let url = format!("rediss://127.0.0.1:{}/", server.port());
    let store = RedisStore::builder(url.as_str())
        .root_certificate(ca.pem())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    five_between_two(store).await;

    // Without the CA, the server's certificate is not trusted: no store.
    let untrusted = RedisStore::builder(url)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(untrusted.ping().await.is_err());
    // Plain redis:// to the TLS port does not pass for a working store.
    let plain = RedisStore::builder(server.url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(plain.ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_shared_on_a_cluster() {
    let dir = std::env::temp_dir().join(format!("tollgate-redis-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nodes = RedisServer::start_cluster(3, &dir);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let store = RedisStore::builder(urls.join(","))
        .cluster()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    five_between_two(store).await;
}
