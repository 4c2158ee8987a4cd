//! What the mock meters per API key, and how: requests and combined tokens as OpenAI does
//! (charged at admission, never corrected), input and output tokens as Anthropic does (input
//! charged without cache reads, output charged `max_tokens` when the request starts and the
//! unused part given back when it ends), and daily counts of requests and tokens.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::bucket::Bucket;
use crate::config::MockConfig;

/// Keys the mock keeps meters for; past this, new keys share an overflow meter.
const MAX_KEYS: usize = 10_000;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What one request asks of the meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// OpenAI's admission charge: the greater of `max_tokens` and the prompt estimate.
    pub(crate) combined: u64,
    /// The prompt's tokens not read from the cache (what Anthropic's input limit counts).
    pub(crate) input: u64,
    /// `max_tokens`, reserved against the output limit.
    pub(crate) output: u64,
}

/// A limit, as the mock names it in headers and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
    RequestsPerDay,
    TokensPerDay,
}

impl Limit {
    /// The family in rate-limit header names.
    pub(crate) fn family(self) -> &'static str {
        match self {
            Limit::Requests | Limit::RequestsPerDay => "requests",
            Limit::Tokens | Limit::TokensPerDay => "tokens",
            Limit::InputTokens => "input-tokens",
            Limit::OutputTokens => "output-tokens",
        }
    }

    /// How the provider names it in a 429's message.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Limit::Requests => "requests per min (RPM)",
            Limit::Tokens => "tokens per min (TPM)",
            Limit::InputTokens => "input tokens per minute",
            Limit::OutputTokens => "output tokens per minute",
            Limit::RequestsPerDay => "requests per day (RPD)",
            Limit::TokensPerDay => "tokens per day (TPD)",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refusal {
    /// It can never fit this limit.
    TooLarge { limit: Limit, capacity: u64 },
    /// It fits in `wait`; for a daily limit, when the day ends.
    Limited { wait: Duration, limit: Limit },
}

/// A bucket as the headers report it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketView {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    pub(crate) refusal: Option<Refusal>,
    /// The per-minute buckets after the admission, for the rate-limit headers.
    pub(crate) views: [(Limit, Option<BucketView>); 4],
}

#[derive(Debug)]
struct Meters {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    input: Option<Bucket>,
    output: Option<Bucket>,
    day: Day,
}

#[derive(Debug)]
struct Day {
    ends: Instant,
    requests: u64,
    tokens: u64,
}

impl Day {
    fn roll(&mut self, now: Instant) {
        while now >= self.ends {
            self.ends += DAY;
            self.requests = 0;
            self.tokens = 0;
        }
    }
}

/// The meters of every key.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    keys: HashMap<String, Meters>,
}

impl Meter {
    fn meters(&mut self, config: &MockConfig, key: &str, now: Instant) -> &mut Meters {
        let key = if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(key) {
            "\u{0}overflow"
        } else {
            key
        };
        let bucket = |per_minute: Option<u32>, capacity: Option<u32>| {
            per_minute.map(|limit| Bucket::new(capacity.unwrap_or(limit), limit, now))
        };
        self.keys.entry(key.to_owned()).or_insert_with(|| Meters {
            requests: bucket(config.rpm, config.burst),
            tokens: bucket(config.tpm, config.token_burst),
            input: bucket(config.itpm, config.itpm_burst),
            output: bucket(config.otpm, config.otpm_burst),
            day: Day {
                ends: now + DAY,
                requests: 0,
                tokens: 0,
            },
        })
    }

    /// Checks every limit and charges all of them, or none.
    pub(crate) fn admit(
        &mut self,
        config: &MockConfig,
        key: &str,
        ask: Ask,
        now: Instant,
    ) -> Admission {
        let meters = self.meters(config, key, now);
        meters.day.roll(now);
        let buckets = [
            (Limit::Requests, &mut meters.requests, 1),
            (Limit::Tokens, &mut meters.tokens, ask.combined),
            (Limit::InputTokens, &mut meters.input, ask.input),
            (Limit::OutputTokens, &mut meters.output, ask.output),
        ];
        let mut refusal = None;
        let mut wait = (Duration::ZERO, Limit::Requests);
        for (limit, bucket, cost) in buckets {
            let Some(bucket) = bucket.as_mut() else {
                continue;
            };
            bucket.refill(now);
            if !bucket.fits(cost as f64) && refusal.is_none() {
                let capacity = bucket.capacity();
                refusal = Some(Refusal::TooLarge { limit, capacity });
            }
            let w = bucket.wait_for(cost as f64);
            if w > wait.0 {
                wait = (w, limit);
            }
        }
        let days = [
            (Limit::RequestsPerDay, config.rpd, meters.day.requests, 1),
            (
                Limit::TokensPerDay,
                config.tpd,
                meters.day.tokens,
                ask.combined,
            ),
        ];
        for (limit, allowance, used, cost) in days {
            if let Some(allowance) = allowance {
                if used + cost > allowance && refusal.is_none() {
                    let wait = meters.day.ends - now;
                    refusal = Some(Refusal::Limited { wait, limit });
                }
            }
        }
        if refusal.is_none() && !wait.0.is_zero() {
            refusal = Some(Refusal::Limited {
                wait: wait.0,
                limit: wait.1,
            });
        }
        if refusal.is_none() {
            let charges = [
                (&mut meters.requests, 1),
                (&mut meters.tokens, ask.combined),
                (&mut meters.input, ask.input),
                (&mut meters.output, ask.output),
            ];
            for (bucket, cost) in charges {
                if let Some(bucket) = bucket.as_mut() {
                    bucket.take(cost as f64);
                }
            }
            meters.day.requests += 1;
        }
        let view = |bucket: &Option<Bucket>| {
            bucket.as_ref().map(|b| BucketView {
                limit: b.per_minute(),
                remaining: b.remaining(),
                reset: b.time_to_full(),
            })
        };
        Admission {
            refusal,
            views: [
                (Limit::Requests, view(&meters.requests)),
                (Limit::Tokens, view(&meters.tokens)),
                (Limit::InputTokens, view(&meters.input)),
                (Limit::OutputTokens, view(&meters.output)),
            ],
        }
    }

    /// An admitted request ended having produced `output` tokens of the `ask.output` reserved
    /// (0 when it failed) and used `tokens` in all: the output limit gets the unused part back
    /// (never past full) and the day counts the real tokens.
    pub(crate) fn settle(
        &mut self,
        config: &MockConfig,
        key: &str,
        ask: Ask,
        output: u64,
        tokens: u64,
        now: Instant,
    ) {
        let meters = self.meters(config, key, now);
        if let Some(bucket) = meters.output.as_mut() {
            bucket.refill(now);
            bucket.give_back(ask.output.saturating_sub(output) as f64);
        }
        meters.day.roll(now);
        meters.day.tokens += tokens;
    }
}
