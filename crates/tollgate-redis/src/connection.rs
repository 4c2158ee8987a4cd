//! [`Connection`]: one Redis server, or a Redis Cluster, behind one type the store talks to.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where the store's commands go. Clones share the connection.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (`redis://`, `rediss://` for TLS): a connection that reconnects by itself.
    Single(ConnectionManager),
    /// A cluster: connected on first use (building the store stays synchronous), then routed
    /// by key slot; one quota's keys share a slot (`{quota}`), so each script runs on one node.
    Cluster(Arc<Cluster>),
}

pub(crate) struct Cluster {
    pub(crate) client: ClusterClient,
    pub(crate) connection: OnceCell<ClusterConnection>,
}

impl Cluster {
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(cluster) => {
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(cluster) => Box::pin(async move {
                cluster
                    .connection()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}
