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
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute, input and output together, charged at admission as OpenAI counts
    /// them (the greater of max_tokens and the prompt).
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM): the prompt, settled to the answer's usage.
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM): max_tokens reserved at admission, the
    /// unused part given back when the answer reports its usage.
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    otpm: Option<u64>,
    /// Requests per day (Groq's and Gemini's RPD): when spent, the batch stops admitting and
    /// says when the quota resets.
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    rpd: Option<u64>,
    /// Tokens per day (Groq's TPD), as used.
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    tpd: Option<u64>,
    /// Requests at once after a quiet spell (default: a tenth of a second's worth of --rpm, at
    /// least 1; providers enforce per-minute limits over much shorter windows).
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    burst: Option<u64>,
    /// Requests in flight at once (default: the config's concurrency, else a second's worth of
    /// --rpm between 4 and 64, else 64; the rate limiter paces them).
    #[arg(long, value_parser = positive_u32, allow_hyphen_values = true)]
    pub(crate) concurrency: Option<u32>,
    /// Attempts per request, the first included.
    #[arg(long, value_parser = positive_u32, allow_hyphen_values = true)]
    max_attempts: Option<u32>,
    /// Timeout of each attempt, in seconds, from when it leaves the rate limiter's queue
    /// (default: 10 s plus 0.1 s per token of the largest `max_tokens` asked, as a slow
    /// provider generates 10 tokens a second and a non-streamed answer arrives whole).
    #[arg(long, value_parser = positive_secs, allow_hyphen_values = true)]
    timeout: Option<f64>,
    /// Deadline of each request, all attempts and waits included, in seconds (default: 600,
    /// the SDKs' ceiling, or two attempt timeouts when longer).
    #[arg(long, value_parser = positive_secs, allow_hyphen_values = true)]
    deadline: Option<f64>,
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
        for (per_minute, field) in [
            (self.tpm, &mut limits.tokens),
            (self.itpm, &mut limits.input_tokens),
            (self.otpm, &mut limits.output_tokens),
        ] {
            if let Some(per_minute) = per_minute {
                *field = Some(rate(per_minute, None)?);
            }
        }
        if let Some(rpd) = self.rpd {
            limits.requests_per_day = Some(rpd);
        }
        if let Some(tpd) = self.tpd {
            limits.tokens_per_day = Some(tpd);
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
        for (flag, seconds, field) in [
            ("--timeout", self.timeout, &mut policy.retry.attempt_timeout),
            ("--deadline", self.deadline, &mut policy.retry.deadline),
        ] {
            if let Some(seconds) = seconds {
                let duration = Duration::try_from_secs_f64(seconds)
                    .map_err(|_| format!("{flag} is too long: {seconds} s"))?;
                *field = Some(duration);
            }
        }
        Ok(())
    }
}

/// A whole number above zero, with a message that says so (also for `-5`).
pub(crate) fn positive(text: &str) -> Result<u64, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n > 0 && n <= i128::from(u64::MAX) => Ok(n as u64),
        _ => Err(format!("must be a positive whole number, got `{text}`")),
    }
}

/// A whole number above zero that fits 32 bits.
pub(crate) fn positive_u32(text: &str) -> Result<u32, String> {
    let n = positive(text)?;
    u32::try_from(n).map_err(|_| format!("must be at most {}, got `{text}`", u32::MAX))
}

/// A number of seconds, zero or more.
pub(crate) fn non_negative_secs(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!(
            "must be a number of seconds, zero or more, got `{text}`"
        )),
    }
}

/// A number of seconds above zero.
pub(crate) fn positive_secs(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(format!(
            "must be a positive number of seconds, got `{text}`"
        )),
    }
}
