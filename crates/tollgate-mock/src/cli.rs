//! Command-line options shared by the `tollgate-mock` binary and `tollgate mock`.

use std::time::Duration;

use crate::config::{Faults, HintStyle, MockConfig, StreamFaults};

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
    about = "A mock AI provider that enforces real rate limits and injects faults",
    // The doc comment above is for rustdoc (its example would read as help text).
    long_about = None
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
    /// Capacity of the token bucket (default: the full minute's tpm).
    #[arg(long)]
    pub token_burst: Option<u32>,
    /// Input tokens per minute per API key, metered as Anthropic does (cache reads excluded).
    #[arg(long)]
    pub itpm: Option<u32>,
    /// Output tokens per minute per API key, metered as Anthropic does: `max_tokens` charged at
    /// the start, the unused part given back at the end.
    #[arg(long)]
    pub otpm: Option<u32>,
    /// Capacity of the input token bucket (default: the full minute's itpm).
    #[arg(long)]
    pub itpm_burst: Option<u32>,
    /// Capacity of the output token bucket (default: the full minute's otpm).
    #[arg(long)]
    pub otpm_burst: Option<u32>,
    /// Requests per day per API key (the day starts with the server).
    #[arg(long)]
    pub rpd: Option<u64>,
    /// Tokens per day per API key, as used (the day starts with the server).
    #[arg(long)]
    pub tpd: Option<u64>,
    /// Real output as a share of `max_tokens`, drawn per answer from LOW..HIGH with the seed
    /// (default: 8 tokens), e.g. `0.1..0.4`.
    #[arg(long, value_parser = parse_share)]
    pub output_share: Option<(f64, f64)>,
    /// Share of each prompt reported as read from the cache (not counted by the input limit).
    #[arg(long, default_value_t = 0.0)]
    pub cache_read_share: f64,
    /// Latency added per output token, in milliseconds (a model generating its answer).
    #[arg(long, default_value_t = 0.0)]
    pub per_output_token_ms: f64,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of requests (0.0 to 1.0) answered with an injected fault.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Share of streamed answers (0.0 to 1.0) with a fault inside the stream: an error event
    /// before or after the first token, a stall, a disconnect, a truncated end, a slow first
    /// token.
    #[arg(long, default_value_t = 0.0)]
    pub stream_fault_rate: f64,
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
        if !(0.0..=1.0).contains(&self.stream_fault_rate) {
            return Err(format!(
                "--stream-fault-rate must be between 0.0 and 1.0, got {}",
                self.stream_fault_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.cache_read_share) {
            return Err(format!(
                "--cache-read-share must be between 0.0 and 1.0, got {}",
                self.cache_read_share
            ));
        }
        if !(self.per_output_token_ms >= 0.0 && self.per_output_token_ms < 60_000.0) {
            return Err(format!(
                "--per-output-token-ms must be between 0 and 60000, got {}",
                self.per_output_token_ms
            ));
        }
        for (flag, value) in [
            ("--rpm", self.rpm),
            ("--tpm", self.tpm),
            ("--burst", self.burst),
            ("--token-burst", self.token_burst),
            ("--itpm", self.itpm),
            ("--otpm", self.otpm),
            ("--itpm-burst", self.itpm_burst),
            ("--otpm-burst", self.otpm_burst),
            ("--rpd", self.rpd.map(|v| v.min(1) as u32)),
            ("--tpd", self.tpd.map(|v| v.min(1) as u32)),
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
            token_burst: self.token_burst,
            itpm: self.itpm,
            otpm: self.otpm,
            itpm_burst: self.itpm_burst,
            otpm_burst: self.otpm_burst,
            rpd: self.rpd,
            tpd: self.tpd,
            output_share: self.output_share,
            cache_read_share: self.cache_read_share,
            per_output_token: Duration::from_secs_f64(self.per_output_token_ms / 1000.0),
            latency: Duration::from_millis(self.latency_ms),
            latency_jitter: Duration::from_millis(self.jitter_ms),
            api_key: self.api_key.clone(),
            faults: Faults {
                rate: self.fault_rate,
                ..Faults::default()
            },
            stream_faults: StreamFaults {
                rate: self.stream_fault_rate,
                ..StreamFaults::default()
            },
            seed: self.seed,
            hints: self.hints,
        })
    }
}

/// `LOW..HIGH`, two shares between 0 and 1.
fn parse_share(text: &str) -> Result<(f64, f64), String> {
    let form = || format!("`{text}` is not a share range: write it like 0.1..0.4");
    let (low, high) = text.split_once("..").ok_or_else(form)?;
    let low: f64 = low.trim().parse().map_err(|_| form())?;
    let high: f64 = high.trim().parse().map_err(|_| form())?;
    if !(0.0 < low && low <= high && high <= 1.0) {
        return Err(format!(
            "`{text}`: the shares must satisfy 0 < LOW <= HIGH <= 1"
        ));
    }
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::MockArgs;

    #[test]
    fn help_is_the_summary_not_the_rustdoc_example() {
        let help = MockArgs::command().render_long_help().to_string();
        assert!(help.starts_with("A mock AI provider"), "{help}");
        assert!(!help.contains("```"), "{help}");
    }
}
