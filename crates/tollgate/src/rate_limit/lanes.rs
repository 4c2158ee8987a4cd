//! [`Priority`] and [`Tenant`]: request extensions that say which lane of the queue a request
//! waits in, and whose share of its lane it takes (see the queue's rules in the module doc).

use std::sync::Arc;

/// A request's lane in the rate limiter's queue: higher lanes are served first, lower lanes
/// keep a minimum share ([`LimitConfig::low_lane_share`](super::LimitConfig::low_lane_share)).
/// A request without one waits in [`Priority::NORMAL`].
///
/// ```
/// use tollgate::rate_limit::Priority;
///
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(Priority::HIGH);
/// assert!(Priority::HIGH > Priority::NORMAL && Priority::NORMAL > Priority::LOW);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Background work: batches.
    pub const LOW: Priority = Priority(0);
    /// The lane of requests that say nothing.
    pub const NORMAL: Priority = Priority(128);
    /// Interactive work: a user waiting.
    pub const HIGH: Priority = Priority(255);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl std::str::FromStr for Priority {
    type Err = crate::ConfigError;

    /// `low`, `normal`, `high`, or a lane from 0 to 255 (as a gateway's `x-tollgate-priority`
    /// header or `tollgate batch --priority` say it).
    ///
    /// ```
    /// use tollgate::rate_limit::Priority;
    ///
    /// assert_eq!("high".parse::<Priority>().unwrap(), Priority::HIGH);
    /// assert_eq!("7".parse::<Priority>().unwrap(), Priority(7));
    /// assert!("urgent".parse::<Priority>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::LOW),
            "normal" => Ok(Priority::NORMAL),
            "high" => Ok(Priority::HIGH),
            lane => lane.parse::<u8>().map(Priority).map_err(|_| {
                crate::ConfigError::new(
                    "priority",
                    format!("`{text}` is not a priority: write low, normal, high or 0 to 255"),
                )
            }),
        }
    }
}

/// Whose request it is, among the tenants sharing one quota: within a lane, competing tenants
/// get admissions in proportion to their weights, a lone tenant gets them all, and an idle
/// tenant's share goes to the others. Set it from whatever names a tenant (a gateway's client
/// key, a header) before the rate limiter, for example in a `map_request` layer.
///
/// ```
/// use tollgate::rate_limit::Tenant;
///
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(Tenant::new("team-a").with_weight(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    name: Arc<str>,
    weight: u32,
}

impl Tenant {
    /// The tenant `name`, with a weight of 1.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Tenant {
            name: name.into(),
            weight: 1,
        }
    }

    /// The same tenant with `weight` (at least 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub(crate) fn share(&self) -> (Arc<str>, u32) {
        (Arc::clone(&self.name), self.weight)
    }
}
