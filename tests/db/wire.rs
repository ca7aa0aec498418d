//! A counting proxy between a client and the server: it relays the
//! PostgreSQL wire protocol unchanged and records which messages the client
//! sent and how many times the server said it was ready for the next
//! request (`ReadyForQuery`, one per round trip the client waited for).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_postgres::config::Host;

/// What went over the wire since the last [`Proxy::take`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// Message types the client sent, in order (`P`arse, `B`ind,
    /// `D`escribe, `E`xecute, `S`ync, `C`lose, `Q`uery).
    pub sent: String,
    /// Names of the statements the client's `Parse` messages created (`""`
    /// for the unnamed statement).
    pub parsed: Vec<String>,
    /// `ReadyForQuery` messages from the server: round trips.
    pub round_trips: usize,
}

#[derive(Default)]
struct Counts {
    sent: Mutex<(String, Vec<String>)>,
    ready: AtomicUsize,
}

/// Listens on 127.0.0.1 and relays each connection to `upstream`.
pub struct Proxy {
    config: tokio_postgres::Config,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy in front of the server `upstream` connects to; connections
    /// made with [`config`](Self::config) use `upstream`'s user, database,
    /// password and options.
    pub async fn start(upstream: &tokio_postgres::Config) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(port);
        if let Some(user) = upstream.get_user() {
            config.user(user);
        }
        if let Some(db) = upstream.get_dbname() {
            config.dbname(db);
        }
        if let Some(password) = upstream.get_password() {
            config.password(password);
        }
        if let Some(options) = upstream.get_options() {
            config.options(options);
        }
        let host = upstream.get_hosts().first().cloned().expect("a host");
        let upstream_port = upstream.get_ports().first().copied().unwrap_or(5432);
        let counts = Arc::new(Counts::default());
        let shared = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let counts = Arc::clone(&shared);
                let host = host.clone();
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    match &host {
                        Host::Unix(dir) => {
                            let path = dir.join(format!(".s.PGSQL.{upstream_port}"));
                            let server = UnixStream::connect(path).await.expect("reach the server");
                            let (sr, sw) = server.into_split();
                            relay(cr, cw, sr, sw, counts).await;
                        }
                        Host::Tcp(name) => {
                            let server = TcpStream::connect((name.as_str(), upstream_port))
                                .await
                                .expect("reach the server");
                            let (sr, sw) = server.into_split();
                            relay(cr, cw, sr, sw, counts).await;
                        }
                    }
                });
            }
        });
        Proxy {
            config,
            counts,
            task,
        }
    }

    /// A configuration that connects through the proxy.
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// Connects through the proxy with tokio-postgres.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect through the proxy");
        tokio::spawn(connection);
        client
    }

    /// The traffic since the last call, and starts counting afresh.
    pub fn take(&self) -> Traffic {
        let (sent, parsed) = std::mem::take(&mut *self.counts.sent.lock().expect("lock"));
        Traffic {
            sent,
            parsed,
            round_trips: self.counts.ready.swap(0, Ordering::SeqCst),
        }
    }
}

async fn relay(
    client_read: impl AsyncRead + Unpin + Send + 'static,
    client_write: impl AsyncWrite + Unpin + Send + 'static,
    server_read: impl AsyncRead + Unpin + Send + 'static,
    server_write: impl AsyncWrite + Unpin + Send + 'static,
    counts: Arc<Counts>,
) {
    let up = tokio::spawn(client_to_server(
        client_read,
        server_write,
        Arc::clone(&counts),
    ));
    let down = tokio::spawn(server_to_client(server_read, client_write, counts));
    let _ = up.await;
    let _ = down.await;
}

/// Reads one message body of `len` bytes (the length field included).
async fn body(from: &mut (impl AsyncRead + Unpin), len: [u8; 4]) -> Option<Vec<u8>> {
    let len = usize::try_from(u32::from_be_bytes(len))
        .ok()?
        .checked_sub(4)?;
    let mut body = vec![0; len];
    from.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn client_to_server(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counts: Arc<Counts>,
) {
    // The startup message has no type byte.
    let mut len = [0; 4];
    if from.read_exact(&mut len).await.is_err() {
        return;
    }
    let Some(startup) = body(&mut from, len).await else {
        return;
    };
    if to.write_all(&len).await.is_err() || to.write_all(&startup).await.is_err() {
        return;
    }
    loop {
        let mut head = [0; 5];
        if from.read_exact(&mut head).await.is_err() {
            return;
        }
        let Some(message) = body(&mut from, [head[1], head[2], head[3], head[4]]).await else {
            return;
        };
        {
            let mut sent = counts.sent.lock().expect("lock");
            sent.0.push(char::from(head[0]));
            if head[0] == b'P' {
                let name = message.split(|&b| b == 0).next().unwrap_or_default();
                sent.1.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        if to.write_all(&head).await.is_err() || to.write_all(&message).await.is_err() {
            return;
        }
    }
}

async fn server_to_client(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counts: Arc<Counts>,
) {
    loop {
        let mut head = [0; 5];
        if from.read_exact(&mut head).await.is_err() {
            return;
        }
        let Some(message) = body(&mut from, [head[1], head[2], head[3], head[4]]).await else {
            return;
        };
        if head[0] == b'Z' {
            counts.ready.fetch_add(1, Ordering::SeqCst);
        }
        if to.write_all(&head).await.is_err() || to.write_all(&message).await.is_err() {
            return;
        }
    }
}
