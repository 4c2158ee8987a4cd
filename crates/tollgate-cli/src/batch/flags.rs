//! The flags that change the policy: each writes one field of [`Policy`] and nothing else, so a
//! new setting is one flag here.

use std::time::Duration;

use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;

/// The policy's flags of `tollgate batch` (over the preset or the config file).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct PolicyFlags {
    /// Requests per minute (overrides the preset or config): a ceiling, not a promise. The rate
    /// adapts below it to the provider's refusals (see --no-adaptive); without it, the rate is
    /// found from the refusals alone.
    #[arg(long)]
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests at once after a quiet spell (default: a tenth of a second's worth of --rpm, at
    /// least 1; providers enforce per-minute limits over much shorter windows).
    #[arg(long)]
    burst: Option<u64>,
    /// Requests in flight at once (default: the config's concurrency, else a second's worth of
    /// --rpm between 4 and 64, else 64; the rate limiter paces them).
    #[arg(long)]
    pub(crate) concurrency: Option<u32>,
    /// Attempts per request, the first included.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Timeout of each attempt, in seconds, from when it leaves the rate limiter's queue.
    #[arg(long)]
    timeout: Option<f64>,
    /// Do not retry an attempt that timed out (`--timeout`): a timed-out completion may still
    /// have run, and been billed, at the provider.
    #[arg(long)]
    no_retry_timeouts: bool,
    /// Keep the request rate strictly fixed at `--rpm` (or the preset's) instead of adapting it
    /// below to the provider's refusals: a 429 then pauses every request for its hint.
    #[arg(long)]
    no_adaptive: bool,
}

impl PolicyFlags {
    /// Writes the flags given into `policy`.
    pub(crate) fn apply(&self, policy: &mut Policy) -> Result<(), String> {
        let limits = &mut policy.limits;
        let rate = |per_minute: u64, burst: Option<u64>| {
            Rate::try_new(per_minute, Duration::from_secs(60), burst).map_err(|e| e.to_string())
        };
        match (self.rpm, self.burst, limits.requests) {
            (Some(rpm), burst, _) => limits.requests = Some(rate(rpm, burst)?),
            (None, Some(burst), Some(old)) => {
                limits.requests = Some(old.with_burst(burst));
            }
            (None, Some(_), None) => {
                return Err("--burst needs --rpm (or a request limit in the config)".into())
            }
            (None, None, _) => {}
        }
        if let Some(tpm) = self.tpm {
            limits.tokens = Some(rate(tpm, None)?);
        }
        if let Some(concurrency) = self.concurrency {
            limits.concurrency = Some(concurrency);
        }
        if self.no_adaptive {
            // The request rate stays at --rpm: a 429 pauses the quota for its hint.
            limits.adaptive = None;
        }
        if let Some(attempts) = self.max_attempts {
            policy.retry.max_attempts = attempts;
        }
        if self.no_retry_timeouts {
            policy.retry.retry_timeouts = false;
        }
        if let Some(timeout) = self.timeout {
            let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
                format!("--timeout must be a positive number of seconds, got {timeout}")
            })?;
            policy.retry.attempt_timeout = Some(timeout);
        }
        Ok(())
    }
}
