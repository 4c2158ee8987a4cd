//! A real provider through the standard stack over HTTPS (rustls), or the mock when no key is set.
//!
//! `OPENAI_API_KEY=sk-... cargo run --features rustls --example openai` sends one chat request to
//! api.openai.com (or `OPENAI_BASE_URL`); without the key it talks to the in-process mock. The key
//! is read from the environment only, and never printed.

use tollgate::rate_limit::Rate;
use tollgate::retry::RetryInfo;
use tollgate::stack::Policy;
use tollgate::{BoxError, Provider};
use tollgate_e2e::{chat_request, https_client};
use tollgate_mock::{MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (base, key, _mock) = match std::env::var("OPENAI_API_KEY") {
        Ok(key) => {
            let base = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com".to_owned());
            (base, key, None)
        }
        Err(_) => {
            let mock = MockServer::spawn(MockConfig::default()).await?;
            println!("OPENAI_API_KEY is not set: using the in-process mock provider");
            (mock.url(), "sk-mock".to_owned(), Some(mock))
        }
    };
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(500));
    let client = policy.layer()?.layer(https_client());
    let response = client
        .oneshot(chat_request(&base, &key, "Say hello in five words.", 20))
        .await?;
    let attempts = response
        .extensions()
        .get::<RetryInfo>()
        .map_or(1, |info| info.attempts);
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    println!(
        "HTTP {status} after {attempts} attempt(s):\n{}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
