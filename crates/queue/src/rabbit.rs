//! The RabbitMQ implementation of [`ShardQueue`], over AMQP 0-9-1 with `lapin`.
//!
//! Topology (declared idempotently on connect and after every reconnect): the durable quorum
//! queue `spillway.shards` (`x-delivery-limit`, dead-lettering to the durable fanout exchange
//! `spillway.dead`), bound to the durable quorum queue `spillway.shards.dead`. Each run's results
//! go to a durable quorum queue named by the task's `reply_to`, declared by the coordinator with
//! `x-expires` so that an abandoned run's queue disappears on its own. Messages are published to
//! the default exchange, persistent, as JSON, and a publish returns only after the broker's
//! publisher confirm.
//!
//! One connection serves a [`RabbitQueue`] and every consumer made from it: publishers share a
//! confirm-mode channel, each consumer has its own channel (its prefetch is that channel's
//! `basic.qos`). A supervisor task watches the connection; when it dies (broker restart, network)
//! it reconnects with exponential backoff and jitter and re-declares the topology. Consumers
//! wait across the outage and subscribe again; deliveries held when the connection died can no
//! longer be answered (the broker redelivers them). A publish during an outage waits for the
//! new connection up to [`RabbitConfig::publish_timeout`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use parking_lot::Mutex;
use rand::Rng;
use serde::de::DeserializeOwned;
use spillway_api::{ShardResult, ShardTask};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::{Acker, Consumer, Delivery, QueueError, ShardQueue, decode, encode};

/// How to reach the broker and how the queues behave.
#[derive(Clone)]
pub struct RabbitConfig {
    /// `amqp://user:password@host:port/vhost` (the vhost URL-encoded: `/` is `%2f`).
    pub url: String,
    /// Deliveries of one task before the broker dead-letters it (`x-delivery-limit`): a task
    /// handed out this many times without an ack (its workers died or gave it back) goes to
    /// the dead-letter queue with reason `delivery_limit`. At least 1.
    pub delivery_limit: u32,
    /// How long an unused per-run results queue lives (`x-expires`).
    pub results_ttl: Duration,
    /// Bound on opening the first connection (TCP, AMQP handshake, topology).
    pub connect_timeout: Duration,
    /// How long a publish waits for the broker during an outage before it fails.
    pub publish_timeout: Duration,
    /// Upper bound of the backoff between reconnect attempts.
    pub max_reconnect_backoff: Duration,
    /// Prefixes the shared names (`spillway.<ns>.shards`, `spillway.<ns>.shards.dead`,
    /// `spillway.<ns>.dead`) so several users can share one broker; `None` gives the
    /// production names. Results queues are always named by the caller.
    pub namespace: Option<String>,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            delivery_limit: 20,
            results_ttl: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(60),
            max_reconnect_backoff: Duration::from_secs(10),
            namespace: None,
        }
    }
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &redact_url(&self.url))
            .field("delivery_limit", &self.delivery_limit)
            .field("results_ttl", &self.results_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`; other URLs unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
}

/// The names of the shared queues and exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNames {
    /// The task queue.
    pub shards: String,
    /// The dead-letter queue of tasks.
    pub dead: String,
    /// The dead-letter exchange of the task queue, bound to `dead`.
    pub dead_exchange: String,
}

impl QueueNames {
    pub fn new(namespace: Option<&str>) -> Self {
        let base = match namespace {
            Some(ns) if !ns.is_empty() => format!("spillway.{ns}"),
            _ => "spillway".to_string(),
        };
        QueueNames {
            shards: format!("{base}.shards"),
            dead: format!("{base}.shards.dead"),
            dead_exchange: format!("{base}.dead"),
        }
    }
}

/// A live connection and the confirm-mode channel publishers share.
#[derive(Clone)]
struct Link {
    conn: Arc<Connection>,
    publish: Channel,
    generation: u64,
}

impl Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }
}

/// What the connection supervisor needs; shared with every handle and consumer.
struct Shared {
    cfg: RabbitConfig,
    names: QueueNames,
    redacted_url: String,
    link: watch::Receiver<Option<Link>>,
    /// Someone saw the link fail: the supervisor checks at once.
    broken: Arc<Notify>,
    closed: watch::Sender<bool>,
    /// Live consumers' channels and tags, so that `close` can cancel them.
    consumers: Mutex<std::collections::HashMap<u64, (Channel, ShortString)>>,
    next_consumer: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: stop the supervisor (its connection closes with it).
        self.closed.send_replace(true);
    }
}

impl Shared {
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn broker_error(&self, queue: &str, reason: impl std::fmt::Display) -> QueueError {
        QueueError::Broker {
            queue: queue.to_string(),
            reason: format!("{reason} (broker {})", self.redacted_url),
        }
    }

    /// A healthy link, waiting across an outage until `deadline` (forever when `None`).
    async fn wait_link(&self, queue: &str, deadline: Option<Instant>) -> Result<Link, QueueError> {
        let mut rx = self.link.clone();
        let mut closed = self.closed.subscribe();
        loop {
            if self.is_closed() {
                return Err(QueueError::Closed);
            }
            let current = rx.borrow_and_update().clone();
            match current {
                Some(link) if link.healthy() => return Ok(link),
                Some(_) => self.broken.notify_one(),
                None => {}
            }
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(QueueError::Closed);
                    }
                }
                _ = closed.wait_for(|c| *c) => return Err(QueueError::Closed),
                // Re-check now and then: the supervisor may not have noticed the failure yet.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = tokio::time::sleep_until(until), if deadline.is_some() => {
                    return Err(self.broker_error(
                        queue,
                        "not connected to the broker and it did not come back in time; \
                         check that RabbitMQ is running and reachable",
                    ));
                }
            }
        }
    }

    /// Runs `op` on a fresh short-lived channel (a failed passive declare closes its channel,
    /// so management operations never use the publish channel).
    async fn with_channel<T, F, Fut>(&self, queue: &str, op: F) -> Result<T, QueueError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, lapin::Error>>,
    {
        let deadline = Instant::now() + self.cfg.publish_timeout;
        let link = self.wait_link(queue, Some(deadline)).await?;
        let channel = link.conn.create_channel().await.map_err(|e| {
            self.broken.notify_one();
            self.broker_error(queue, format!("could not open a channel: {e}"))
        })?;
        let out = op(channel.clone()).await;
        if channel.status().connected() {
            let _ = channel.close(200, "OK".into()).await;
        }
        out.map_err(|e| self.broker_error(queue, e))
    }

    async fn publish(&self, routing_key: &str, payload: &[u8]) -> Result<(), QueueError> {
        let key = short(routing_key)?;
        let deadline = Instant::now() + self.cfg.publish_timeout;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        loop {
            let link = self.wait_link(routing_key, Some(deadline)).await?;
            let sent = async {
                link.publish
                    .basic_publish(
                        "".into(),
                        key.clone(),
                        BasicPublishOptions::default(),
                        payload,
                        props.clone(),
                    )
                    .await?
                    .await
            }
            .await;
            match sent {
                Ok(confirm) if confirm.is_ack() => return Ok(()),
                Ok(_) => {
                    return Err(self.broker_error(
                        routing_key,
                        "the broker refused the message (publisher confirm nack); \
                         check the broker's logs and disk and memory alarms",
                    ));
                }
                Err(e) if is_connection_failure(&e) && Instant::now() < deadline => {
                    // Not confirmed: publish again on the next connection (at least once).
                    tracing::warn!(queue = routing_key, error = %e, "publish interrupted; retrying after reconnect");
                    self.broken.notify_one();
                    // Let the connection's state catch up before looking for a new one.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(self.broker_error(routing_key, format!("publish failed: {e}")));
                }
            }
        }
    }
}

fn short(name: &str) -> Result<ShortString, QueueError> {
    ShortString::try_new(name).map_err(|_| QueueError::Broker {
        queue: name.chars().take(64).collect(),
        reason: "queue names are at most 255 bytes; use a shorter name".to_string(),
    })
}

fn protocol_error(e: &lapin::Error) -> Option<&AMQPErrorKind> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.kind()),
        _ => None,
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(
        protocol_error(e),
        Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// Errors that a new connection (or channel) can cure, as opposed to a refusal.
fn is_connection_failure(e: &lapin::Error) -> bool {
    match e.kind() {
        ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
                | AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR)
        ),
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => true,
        _ => false,
    }
}

/// Refusals that retrying cannot fix (wrong credentials, unknown vhost).
fn is_refusal(e: &lapin::Error) -> bool {
    matches!(
        protocol_error(e),
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED))
            | Some(AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED))
            | Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16));
    let d = base.min(cap.max(Duration::from_millis(100)));
    // Full range jitter in [d/2, d] so that reconnecting clients spread out.
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

/// The arguments of the task queue, as declared.
pub fn task_queue_arguments(cfg: &RabbitConfig, names: &QueueNames) -> FieldTable {
    let mut args = quorum_args();
    // RabbitMQ dead-letters a message returned *more* than x-delivery-limit times, i.e. on
    // the return after delivery limit + 1; one less makes `delivery_limit` the number of
    // deliveries, as documented on the field.
    let limit = cfg.delivery_limit.max(1) - 1;
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(limit)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dead_exchange.as_str().into()),
    );
    args
}

fn results_arguments(cfg: &RabbitConfig) -> FieldTable {
    let mut args = quorum_args();
    let ms = cfg.results_ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
    args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
    args
}

/// Opens a connection, declares the topology and opens the publish channel.
async fn open_link(
    cfg: &RabbitConfig,
    names: &QueueNames,
    generation: u64,
) -> Result<Link, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name("spillway".into());
    let conn = Connection::connect(&cfg.url, props).await?;
    let setup = conn.create_channel().await?;
    setup
        .exchange_declare(
            names.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    setup
        .queue_declare(names.dead.as_str().into(), durable(), quorum_args())
        .await?;
    setup
        .queue_bind(
            names.dead.as_str().into(),
            names.dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    setup
        .queue_declare(
            names.shards.as_str().into(),
            durable(),
            task_queue_arguments(cfg, names),
        )
        .await?;
    let _ = setup.close(200, "OK".into()).await;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(Link {
        conn: Arc::new(conn),
        publish,
        generation,
    })
}

/// Keeps the connection alive: notices failures and reconnects with backoff.
async fn supervise(
    cfg: RabbitConfig,
    names: QueueNames,
    redacted_url: String,
    mut link: Link,
    tx: watch::Sender<Option<Link>>,
    broken: Arc<Notify>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        // Watch the current connection.
        loop {
            tokio::select! {
                _ = closed.wait_for(|c| *c) => return,
                _ = broken.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if !link.healthy() {
                break;
            }
        }
        tracing::warn!(
            broker = %redacted_url,
            generation = link.generation,
            "lost the connection to the broker; reconnecting"
        );
        tx.send_replace(None);
        let generation = link.generation + 1;
        drop(link);
        let mut attempt = 0u32;
        link = loop {
            if *closed.borrow() {
                return;
            }
            let tried =
                tokio::time::timeout(cfg.connect_timeout, open_link(&cfg, &names, generation))
                    .await;
            match tried {
                Ok(Ok(l)) => break l,
                Ok(Err(e)) => {
                    tracing::warn!(broker = %redacted_url, attempt, error = %e, "reconnect failed")
                }
                Err(_) => {
                    tracing::warn!(broker = %redacted_url, attempt, "reconnect timed out")
                }
            }
            let wait = backoff(attempt, cfg.max_reconnect_backoff);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = closed.wait_for(|c| *c) => return,
                _ = tokio::time::sleep(wait) => {}
            }
        };
        tracing::info!(
            broker = %redacted_url,
            generation,
            attempts = attempt + 1,
            "reconnected to the broker and declared the topology"
        );
        tx.send_replace(Some(link.clone()));
    }
}

/// [`ShardQueue`] on RabbitMQ. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RabbitQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("broker", &self.shared.redacted_url)
            .field("names", &self.shared.names)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RabbitQueue {
    /// Connects, declares the topology and starts the reconnect supervisor. Retries refused
    /// connections with backoff until `connect_timeout`; wrong credentials or vhost fail at once.
    pub async fn connect(cfg: RabbitConfig) -> Result<RabbitQueue, QueueError> {
        let names = QueueNames::new(cfg.namespace.as_deref());
        let redacted_url = redact_url(&cfg.url);
        let fail = |reason: String| QueueError::Broker {
            queue: names.shards.clone(),
            reason: format!(
                "could not connect to {redacted_url}: {reason}; check that RabbitMQ is running \
                 and reachable there and that the user, password and vhost are right"
            ),
        };
        let deadline = Instant::now() + cfg.connect_timeout;
        let mut attempt = 0u32;
        let link = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, open_link(&cfg, &names, 0)).await {
                Ok(Ok(link)) => break link,
                Ok(Err(e)) if is_refusal(&e) => return Err(fail(e.to_string())),
                Ok(Err(e)) => {
                    let wait = backoff(attempt, cfg.max_reconnect_backoff);
                    if Instant::now() + wait >= deadline {
                        return Err(fail(e.to_string()));
                    }
                    tracing::debug!(broker = %redacted_url, attempt, error = %e, "connect failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {
                    return Err(fail(format!(
                        "no answer within {:?} (connect_timeout)",
                        cfg.connect_timeout
                    )));
                }
            }
        };
        tracing::info!(broker = %redacted_url, queue = %names.shards, "connected to the broker");
        let (tx, rx) = watch::channel(Some(link.clone()));
        let (closed_tx, closed_rx) = watch::channel(false);
        let broken = Arc::new(Notify::new());
        tokio::spawn(supervise(
            cfg.clone(),
            names.clone(),
            redacted_url.clone(),
            link,
            tx,
            broken.clone(),
            closed_rx,
        ));
        Ok(RabbitQueue {
            shared: Arc::new(Shared {
                cfg,
                names,
                redacted_url,
                link: rx,
                broken,
                closed: closed_tx,
                consumers: Mutex::new(Default::default()),
                next_consumer: AtomicU64::new(0),
            }),
        })
    }

    /// The names of the shared queues this handle uses.
    pub fn names(&self) -> &QueueNames {
        &self.shared.names
    }

    /// True while the connection to the broker is up (for readiness probes).
    pub fn is_connected(&self) -> bool {
        !self.shared.is_closed()
            && self
                .shared
                .link
                .borrow()
                .as_ref()
                .is_some_and(Link::healthy)
    }

    /// Messages ready in the task queue and in the dead-letter queue (unacknowledged
    /// deliveries are not counted).
    pub async fn queue_depths(&self) -> Result<(u32, u32), QueueError> {
        let tasks = self.queue_depth(&self.shared.names.shards).await?;
        let dead = self.queue_depth(&self.shared.names.dead).await?;
        Ok((tasks, dead))
    }

    /// Ready messages in `queue` (passive declare); an error if it does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, QueueError> {
        let name = short(queue)?;
        self.shared
            .with_channel(queue, |ch| async move {
                let q = ch
                    .queue_declare(name, passive(), FieldTable::default())
                    .await?;
                Ok(q.message_count())
            })
            .await
    }

    /// Stops every consumer (`basic.cancel`) and closes the connection. Consumers then
    /// return `None`; publishing fails with [`QueueError::Closed`]. Unanswered deliveries go
    /// back to their queues.
    pub async fn close(&self) {
        if self.shared.closed.send_replace(true) {
            return;
        }
        let consumers: Vec<(Channel, ShortString)> = self
            .shared
            .consumers
            .lock()
            .drain()
            .map(|(_, v)| v)
            .collect();
        for (channel, tag) in consumers {
            if channel.status().connected() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    channel.basic_cancel(tag, BasicCancelOptions::default()),
                )
                .await;
            }
        }
        let link = self.shared.link.borrow().clone();
        if let Some(link) = link
            && link.conn.status().connected()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), link.conn.close(200, "OK".into()))
                .await;
        }
        tracing::info!(broker = %self.shared.redacted_url, "closed the broker connection");
    }

    fn consumer<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &str,
        prefetch: u16,
        own_queue: bool,
    ) -> RabbitConsumer<T> {
        RabbitConsumer {
            shared: self.shared.clone(),
            id: self.shared.next_consumer.fetch_add(1, Ordering::Relaxed),
            queue: queue.to_string(),
            prefetch,
            own_queue,
            sub: None,
            _t: PhantomData,
        }
    }
}

/// An active subscription on one channel.
struct Subscription {
    channel: Channel,
    consumer: lapin::Consumer,
    /// Held while the subscription is being cancelled; answers to its deliveries wait for it,
    /// so that a message given back is not handed to this consumer again on its way out.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// Outcome of trying to (re)subscribe.
enum Subscribe {
    Ok(Box<Subscription>),
    /// The queue is gone (a results queue deleted at the end of its run): the stream ends.
    Gone,
    /// Not now (connection trouble); try again after a pause.
    Retry(String),
}

struct RabbitConsumer<T> {
    shared: Arc<Shared>,
    id: u64,
    queue: String,
    prefetch: u16,
    /// A per-run results queue: its deletion ends the stream (shared queues are declared
    /// with the connection and never end it).
    own_queue: bool,
    sub: Option<Box<Subscription>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Drop for RabbitConsumer<T> {
    fn drop(&mut self) {
        self.shared.consumers.lock().remove(&self.id);
        // Cancel before any later answer to a delivery reaches the broker (the gate is taken
        // here, synchronously), so a message given back is not handed to this consumer again.
        // Deliveries already handed out keep the channel open until they are answered.
        if let Some(sub) = self.sub.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
            && let Ok(guard) = sub.gate.clone().try_lock_owned()
        {
            rt.spawn(async move {
                if sub.channel.status().connected() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        sub.channel
                            .basic_cancel(sub.consumer.tag(), BasicCancelOptions::default()),
                    )
                    .await;
                }
                drop(guard);
            });
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> RabbitConsumer<T> {
    async fn subscribe(&mut self) -> Result<Subscribe, QueueError> {
        let link = self.shared.wait_link(&self.queue, None).await?;
        let name = short(&self.queue)?;
        let channel = match link.conn.create_channel().await {
            Ok(c) => c,
            Err(e) => {
                self.shared.broken.notify_one();
                return Ok(Subscribe::Retry(format!("could not open a channel: {e}")));
            }
        };
        let steps = async {
            if self.prefetch > 0 {
                channel
                    .basic_qos(self.prefetch, BasicQosOptions { global: false })
                    .await?;
            }
            if self.own_queue {
                // Declared by `consume_results`; only check it still exists: a deleted
                // results queue means the run is over, and must not be re-created.
                channel
                    .queue_declare(name.clone(), passive(), FieldTable::default())
                    .await?;
            }
            channel
                .basic_consume(
                    name.clone(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        match steps.await {
            Ok(consumer) => {
                self.shared
                    .consumers
                    .lock()
                    .insert(self.id, (channel.clone(), consumer.tag()));
                Ok(Subscribe::Ok(Box::new(Subscription {
                    channel,
                    consumer,
                    gate: Arc::new(tokio::sync::Mutex::new(())),
                })))
            }
            Err(e) if is_not_found(&e) && self.own_queue => Ok(Subscribe::Gone),
            Err(e) if is_connection_failure(&e) => {
                self.shared.broken.notify_one();
                Ok(Subscribe::Retry(e.to_string()))
            }
            Err(e) => Err(self
                .shared
                .broker_error(&self.queue, format!("could not consume: {e}"))),
        }
    }

    /// Turns a broker delivery into ours; an undecodable one comes back with its acker so
    /// that the caller can dead-letter it.
    fn wrap(
        &self,
        sub: &Subscription,
        d: lapin::message::Delivery,
    ) -> Result<Delivery<T>, (QueueError, Box<RabbitAcker>)> {
        let headers = d.properties.headers().as_ref();
        let delivery_count = headers
            .and_then(|h| h.inner().get("x-delivery-count"))
            .and_then(as_u64)
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX - 1) + 1);
        let reason = headers.and_then(death_reason);
        let decoded = decode::<T>(&self.queue, &d.data);
        let acker = Box::new(RabbitAcker {
            acker: Some(d.acker),
            channel: sub.channel.clone(),
            gate: sub.gate.clone(),
            queue: self.queue.clone(),
            redacted_url: self.shared.redacted_url.clone(),
        });
        match decoded {
            Ok(m) => {
                let out = Delivery::new(m, delivery_count, acker);
                Ok(match reason {
                    Some(r) => out.with_dead_letter_reason(r),
                    None => out,
                })
            }
            Err(e) => Err((e, acker)),
        }
    }
}

/// Integer header values as RabbitMQ sends them (signed long, but be lenient).
fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

fn as_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// `reason` of the newest `x-death` entry (RabbitMQ puts it first).
fn death_reason(headers: &FieldTable) -> Option<String> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(entries) => match entries.as_slice().first()? {
            AMQPValue::FieldTable(t) => t.inner().get("reason").and_then(as_text),
            _ => None,
        },
        _ => None,
    }
}

#[async_trait]
impl<T: DeserializeOwned + Send + 'static> Consumer<T> for RabbitConsumer<T> {
    async fn next(&mut self) -> Option<Result<Delivery<T>, QueueError>> {
        let mut closed = self.shared.closed.subscribe();
        let mut failures = 0u32;
        loop {
            if *closed.borrow() {
                return None;
            }
            if self.sub.is_none() {
                let attempt = tokio::select! {
                    _ = closed.wait_for(|c| *c) => return None,
                    s = self.subscribe() => s,
                };
                match attempt {
                    Ok(Subscribe::Ok(sub)) => {
                        failures = 0;
                        self.sub = Some(sub);
                    }
                    Ok(Subscribe::Gone) => return None,
                    Ok(Subscribe::Retry(reason)) => {
                        tracing::debug!(queue = %self.queue, %reason, "subscribe failed; retrying");
                        let wait = backoff(failures, self.shared.cfg.max_reconnect_backoff);
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            _ = closed.wait_for(|c| *c) => return None,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                    Err(QueueError::Closed) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let sub = self.sub.as_mut().expect("subscribed above");
            let item = tokio::select! {
                _ = closed.wait_for(|c| *c) => return None,
                item = sub.consumer.next() => item,
            };
            match item {
                Some(Ok(d)) => {
                    let wrapped = self.wrap(self.sub.as_ref().expect("subscribed"), d);
                    return Some(match wrapped {
                        Ok(delivery) => Ok(delivery),
                        Err((e, acker)) => {
                            // Undecodable: dead-letter it (never retry it forever), report it.
                            if let Err(re) = acker.reject().await {
                                tracing::warn!(queue = %self.queue, error = %re, "could not dead-letter an undecodable message");
                            }
                            Err(e)
                        }
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer lost its channel; subscribing again");
                    self.shared.broken.notify_one();
                    self.sub = None;
                    self.shared.consumers.lock().remove(&self.id);
                }
                None => {
                    // Cancelled: by the broker (queue deleted, leader moved) or by the
                    // connection ending. Subscribe again; a deleted queue ends the stream.
                    self.sub = None;
                    self.shared.consumers.lock().remove(&self.id);
                    if !self.own_queue {
                        // A shared queue cancelled under us: pause before subscribing again.
                        let wait = backoff(failures, self.shared.cfg.max_reconnect_backoff);
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            _ = closed.wait_for(|c| *c) => return None,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        }
    }
}

/// Answers one delivery on the channel it came from.
struct RabbitAcker {
    acker: Option<lapin::Acker>,
    /// Keeps the channel open until the delivery is answered.
    channel: Channel,
    gate: Arc<tokio::sync::Mutex<()>>,
    queue: String,
    redacted_url: String,
}

impl RabbitAcker {
    async fn answer(&mut self, how: Answer) -> Result<(), QueueError> {
        drop(self.gate.lock().await);
        let acker = self.acker.take().expect("answered once");
        let res = match how {
            Answer::Ack => acker.ack(Default::default()).await,
            Answer::Requeue => {
                acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
            Answer::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
        };
        match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(QueueError::Broker {
                queue: self.queue.clone(),
                reason: format!(
                    "cannot {how} the delivery: its channel closed (connection to {} lost); \
                     the broker delivers the message again",
                    self.redacted_url
                ),
            }),
            Err(e) => Err(QueueError::Broker {
                queue: self.queue.clone(),
                reason: format!("{how} failed: {e} (broker {})", self.redacted_url),
            }),
        }
    }
}

#[derive(Clone, Copy)]
enum Answer {
    Ack,
    Requeue,
    Reject,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Answer::Ack => "ack",
            Answer::Requeue => "requeue",
            Answer::Reject => "reject",
        })
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.answer(Answer::Ack).await
    }
    async fn requeue(mut self: Box<Self>) -> Result<(), QueueError> {
        self.answer(Answer::Requeue).await
    }
    async fn reject(mut self: Box<Self>) -> Result<(), QueueError> {
        self.answer(Answer::Reject).await
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        // Dropped unanswered: give it back now, like a consumer whose connection died. Without
        // a runtime the message returns when its channel closes.
        if let Some(acker) = self.acker.take()
            && acker.usable()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let channel = self.channel.clone();
            let gate = self.gate.clone();
            rt.spawn(async move {
                drop(gate.lock().await);
                let _ = acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
                drop(channel);
            });
        }
    }
}

#[async_trait]
impl ShardQueue for RabbitQueue {
    async fn publish_task(&self, task: &ShardTask) -> Result<(), QueueError> {
        self.shared
            .publish(&self.shared.names.shards, &encode(task))
            .await
    }

    async fn consume_tasks(
        &self,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer<ShardTask>>, QueueError> {
        if self.shared.is_closed() {
            return Err(QueueError::Closed);
        }
        let queue = self.shared.names.shards.clone();
        Ok(Box::new(self.consumer(&queue, prefetch.max(1), false)))
    }

    async fn publish_result(&self, reply_to: &str, result: &ShardResult) -> Result<(), QueueError> {
        // The default exchange drops a message for a queue that does not exist (its run is
        // over) and still confirms it: that is the documented behaviour.
        self.shared.publish(reply_to, &encode(result)).await
    }

    async fn consume_results(
        &self,
        name: &str,
    ) -> Result<Box<dyn Consumer<ShardResult>>, QueueError> {
        if self.shared.is_closed() {
            return Err(QueueError::Closed);
        }
        let args = results_arguments(&self.shared.cfg);
        let name_short = short(name)?;
        // Declare now so that results published before the first `next()` are kept.
        self.shared
            .with_channel(name, |ch| async move {
                ch.queue_declare(name_short, durable(), args).await
            })
            .await?;
        Ok(Box::new(self.consumer(name, 0, true)))
    }

    async fn results_exist(&self, name: &str) -> Result<bool, QueueError> {
        match self.queue_depth(name).await {
            Ok(_) => Ok(true),
            Err(QueueError::Broker { reason, .. })
                if reason.contains("NOT_FOUND") || reason.contains("no queue") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_results(&self, name: &str) -> Result<(), QueueError> {
        let name_short = short(name)?;
        self.shared
            .with_channel(name, |ch| async move {
                ch.queue_delete(name_short, QueueDeleteOptions::default())
                    .await
                    .map(|_| ())
            })
            .await
    }

    async fn consume_dead_tasks(&self) -> Result<Box<dyn Consumer<ShardTask>>, QueueError> {
        if self.shared.is_closed() {
            return Err(QueueError::Closed);
        }
        let queue = self.shared.names.dead.clone();
        Ok(Box::new(self.consumer(&queue, 0, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5682/%2f"),
            "amqp://guest:***@127.0.0.1:5682/%2f"
        );
        assert_eq!(
            redact_url("amqps://u:p@ss@host/vh?heartbeat=5"),
            "amqps://u:***@host/vh?heartbeat=5"
        );
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        let cfg = RabbitConfig {
            url: "amqp://a:topsecret@h/%2f".into(),
            ..RabbitConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("topsecret"));
    }

    #[test]
    fn names_follow_the_namespace() {
        assert_eq!(QueueNames::new(None).shards, "spillway.shards");
        assert_eq!(QueueNames::new(None).dead, "spillway.shards.dead");
        let n = QueueNames::new(Some("t1"));
        assert_eq!(n.shards, "spillway.t1.shards");
        assert_eq!(n.dead, "spillway.t1.shards.dead");
        assert_eq!(n.dead_exchange, "spillway.t1.dead");
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let cap = Duration::from_secs(10);
        for attempt in 0..40 {
            let d = backoff(attempt, cap);
            assert!(d <= cap, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(0, cap) <= Duration::from_millis(100));
        assert!(backoff(30, cap) >= Duration::from_secs(5));
    }

    #[test]
    fn death_reason_reads_the_newest_entry() {
        let mut newest = FieldTable::default();
        newest.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let mut older = FieldTable::default();
        older.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![AMQPValue::FieldTable(newest), AMQPValue::FieldTable(older)].into(),
            ),
        );
        assert_eq!(death_reason(&headers).as_deref(), Some("delivery_limit"));
        assert_eq!(death_reason(&FieldTable::default()), None);
    }
}
