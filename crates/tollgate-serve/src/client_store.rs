//! A client's own limits kept in the replicas' shared store, under a quota name of its own.

use std::sync::Arc;
use std::time::Duration;

use tollgate::classify::LimitKind;
use tollgate::rate_limit::{Charge, Grant, Rate, Store, StoreFuture, StoreHold};

/// The gateway's store seen by one client's limiter: every quota it names becomes
/// `client:NAME` (`client:NAME:QUOTA` for a keyed one), so that the clients' quotas, the
/// provider's (`default`) and each other's never share a bucket, while the same client on every
/// replica shares one.
#[derive(Debug)]
pub(crate) struct ClientStore {
    inner: Arc<dyn Store>,
    /// `client:NAME`, the name of the client's unkeyed quota (the only kind the gateway makes).
    quota: Arc<str>,
}

impl ClientStore {
    pub(crate) fn new(inner: Arc<dyn Store>, client: &str) -> Self {
        ClientStore {
            inner,
            quota: format!("client:{client}").into(),
        }
    }

    fn rename(&self, quota: &str) -> Arc<str> {
        if quota == "default" {
            Arc::clone(&self.quota)
        } else {
            format!("{}:{quota}", self.quota).into()
        }
    }
}

impl Store for ClientStore {
    fn acquire(&self, mut charge: Charge) -> StoreFuture<Grant> {
        charge.quota = self.rename(&charge.quota);
        self.inner.acquire(charge)
    }

    fn pause(&self, quota: &str, duration: Duration) -> StoreFuture<()> {
        self.inner.pause(&self.rename(quota), duration)
    }

    fn lower(&self, quota: &str, which: LimitKind, rate: Rate, remaining: u64) -> StoreFuture<()> {
        self.inner
            .lower(&self.rename(quota), which, rate, remaining)
    }

    fn settle(
        &self,
        quota: &str,
        rate: Option<Rate>,
        hold: StoreHold,
        used: u64,
    ) -> StoreFuture<()> {
        self.inner.settle(&self.rename(quota), rate, hold, used)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A store that records the quota names it is asked about and admits everything.
    #[derive(Debug, Default, Clone)]
    struct Names(Arc<Mutex<Vec<String>>>);

    impl Store for Names {
        fn acquire(&self, charge: Charge) -> StoreFuture<Grant> {
            self.0.lock().unwrap().push(charge.quota.to_string());
            Box::pin(async { Ok(Grant::Admitted) })
        }
        fn pause(&self, quota: &str, _: Duration) -> StoreFuture<()> {
            self.0.lock().unwrap().push(quota.to_owned());
            Box::pin(async { Ok(()) })
        }
        fn lower(&self, quota: &str, _: LimitKind, _: Rate, _: u64) -> StoreFuture<()> {
            self.0.lock().unwrap().push(quota.to_owned());
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn each_client_names_a_quota_of_its_own() {
        let names = Names::default();
        let shared: Arc<dyn Store> = Arc::new(names.clone());
        let (batch, web) = (
            ClientStore::new(Arc::clone(&shared), "batch"),
            ClientStore::new(shared, "web"),
        );
        let charge = || Charge::new("default", Some(Rate::per_minute(60)), None, Duration::ZERO);
        batch.acquire(charge()).await.unwrap();
        web.acquire(charge()).await.unwrap();
        batch
            .pause("default", Duration::from_secs(1))
            .await
            .unwrap();
        web.lower("gpt-4o", LimitKind::Requests, Rate::per_minute(60), 3)
            .await
            .unwrap();
        assert_eq!(
            *names.0.lock().unwrap(),
            [
                "client:batch",
                "client:web",
                "client:batch",
                "client:web:gpt-4o"
            ]
        );
    }
}
