//! A real `redis-server` on a free loopback port, for the tests of the Redis store.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process the test owns: started on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

/// Says what is missing and how to install it: the Redis tests never pass without a server.
fn missing(error: std::io::Error) -> ! {
    panic!(
        "cannot start `redis-server` ({error}): the Redis store's tests need a real Redis server. \
         Install it with `apt-get install -y redis-server`, or run the README's test command \
         (scripts/test.sh), which installs it when run as root."
    )
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (the same port again after [`kill`](Self::kill), to test a
    /// restart).
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, vec!["--port".into(), port.to_string()])
    }

    /// Starts a server that speaks TLS only, with the PEM certificate and key at `cert` and
    /// `key` (clients are not asked for certificates).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let port = free_port();
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        Self::spawn(
            port,
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        )
    }

    /// Starts `nodes` servers in cluster mode and joins them into one cluster (no replicas),
    /// with `redis-cli --cluster create`; returns once the cluster says it is ok.
    pub fn start_cluster(nodes: usize, dir: &std::path::Path) -> Vec<Self> {
        let servers: Vec<RedisServer> = (0..nodes)
            .map(|_| {
                let port = free_port();
                Self::spawn(
                    port,
                    vec![
                        "--port".into(),
                        port.to_string(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--dir".into(),
                        dir.to_string_lossy().into_owned(),
                    ],
                )
            })
            .collect();
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(servers.iter().map(|s| format!("127.0.0.1:{}", s.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|error| missing(error));
        assert!(
            create.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&create.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for server in &servers {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &server.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap_or_else(|error| missing(error));
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ok in 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        servers
    }

    fn spawn(port: u16, args: Vec<String>) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| missing(error));
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not accept connections on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
