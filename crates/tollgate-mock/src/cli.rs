//! Command-line options shared by the `tollgate-mock` binary and `tollgate mock`.

use std::time::Duration;

use crate::config::{Faults, HintStyle, MockConfig};

/// Options of the mock provider's command line.
///
/// ```
/// use clap::Parser;
/// use tollgate_mock::MockArgs;
///
/// let args = MockArgs::parse_from(["tollgate-mock", "--rpm", "600", "--burst", "10", "--fault-rate", "0.1"]);
/// let config = args.to_config().unwrap();
/// assert_eq!(config.request_burst(), Some(10));
/// ```
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tollgate-mock",
    about = "A mock AI provider that enforces real rate limits and injects faults"
)]
pub struct MockArgs {
    /// Port on 127.0.0.1 to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Requests per minute per API key (unlimited when absent).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens per minute per API key (unlimited when absent).
    #[arg(long)]
    pub tpm: Option<u32>,
    /// Capacity of the request bucket (default: the full minute's rpm).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of requests (0.0 to 1.0) answered with an injected fault.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seed for the fault and latency draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What a 429 says: `full` (Retry-After, retry-after-ms and rate-limit headers on every
    /// answer), `retry-after-only` (whole seconds, no rate-limit headers, as nginx's
    /// `limit_req`), or `none`.
    #[arg(long, value_enum, default_value = "full")]
    pub hints: HintStyle,
    /// Accept only this API key (any non-empty key when absent).
    #[arg(long, env = "TOLLGATE_MOCK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl MockArgs {
    /// The configuration these options describe, or what is wrong with them.
    pub fn to_config(&self) -> Result<MockConfig, String> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(format!(
                "--fault-rate must be between 0.0 and 1.0, got {}",
                self.fault_rate
            ));
        }
        for (flag, value) in [
            ("--rpm", self.rpm),
            ("--tpm", self.tpm),
            ("--burst", self.burst),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{flag} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        Ok(MockConfig {
            rpm: self.rpm,
            tpm: self.tpm,
            burst: self.burst,
            latency: Duration::from_millis(self.latency_ms),
            latency_jitter: Duration::from_millis(self.jitter_ms),
            api_key: self.api_key.clone(),
            faults: Faults {
                rate: self.fault_rate,
                ..Faults::default()
            },
            seed: self.seed,
            hints: self.hints,
            ..MockConfig::default()
        })
    }
}
